"""Errors of the KME key store (:mod:`qkdtwin.kms.store`): which ones, and how to report them.

:data:`STORE_ERRORS` lists the exceptions a store method raises when the database fails,
:func:`is_transient_store_error` tells whether a retry is worth it and :func:`describe_error`
names an error in one line for operators (no SQL, no parameters, no file path). Every name
here is re-exported by :mod:`qkdtwin.kms.store`.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    PendingRollbackError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

__all__ = ["STORE_ERRORS", "describe_error", "is_transient_store_error"]

#: Exceptions a store method raises when the database fails (not a refusal of the request).
STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, sqlite3.Error, OSError)


def is_transient_store_error(exc: BaseException) -> bool:
    """Return whether a store error may go away by itself, so that a retry is worth it.

    True for a lost or refused connection, a lock or pool timeout, a full disk, a read-only
    or unreachable file (SQLAlchemy ``OperationalError``/``InterfaceError``/disconnects,
    ``sqlite3.OperationalError``, ``OSError``); false for errors that repeat on every retry
    (a constraint or SQL error: a bug). Retrying is safe either way: the failed transaction
    was rolled back.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    transient = (
        OperationalError,
        InterfaceError,
        DisconnectionError,
        PoolTimeoutError,
        PendingRollbackError,
        sqlite3.OperationalError,
        OSError,
    )
    return isinstance(exc, transient)


def describe_error(exc: BaseException, limit: int = 200) -> str:
    """One line naming an error for operators: its type and the database's own message.

    No SQL statement, no parameters, no file path (an ``OSError``'s file names are left
    out), at most ``limit`` characters.
    """
    inner: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        inner = exc.orig  # the driver's error, without SQLAlchemy's statement and parameters
    if isinstance(inner, OSError) and inner.errno is not None:
        name = errno.errorcode.get(inner.errno, str(inner.errno))
        text = f"[{name}] {inner.strerror or os.strerror(inner.errno)}"
    else:
        text = " ".join(str(inner).split()) or "no message"
    line = f"{type(inner).__name__}: {text}"
    return line if len(line) <= limit else line[: limit - 3] + "..."
