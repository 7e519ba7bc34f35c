"""Input checks of the ``kms`` commands, made before anything starts.

Each raises :class:`~qkdtwin.errors.ConfigError` with one line that names the offending file,
URL or option: a missing or unloadable certificate, key or CA, a store URL the KMS does not
accept or cannot open (password hidden), a KME URL that is not ``https://HOST:PORT``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkdtwin.errors import ConfigError

if TYPE_CHECKING:
    from qkdtwin.kms import KeyStore

__all__ = [
    "STORE_URLS",
    "check_kme_url",
    "check_store_url",
    "check_tls_files",
    "one_line",
    "open_key_store",
    "per_kme_url",
    "reason",
    "require_file",
    "store_error",
]

#: The store URLs the kms commands accept, for messages.
STORE_URLS = "sqlite:///PATH or postgresql://USER@HOST/DB"


def one_line(exc: BaseException | str) -> str:
    """Return the text of an error on one line (no ``(_ssl.c:N)``, no SQLAlchemy links)."""
    text = str(exc).split("\n(Background on this error")[0]
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
    return " ".join(text.split())


def reason(exc: BaseException) -> str:
    """Return the operating system's reason (``No such file or directory``) or the message."""
    strerror = exc.strerror if isinstance(exc, OSError) else None
    return one_line(strerror or exc)


def require_file(path: Path, what: str, *, pki: bool = False) -> Path:
    """Return ``path`` if it is a file; else raise a ConfigError naming ``what`` and the path.

    ``pki``: the file belongs to a PKI, so a missing one says to run ``kms pki init`` first.
    """
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a directory, not a file", field=what, value=path)
    hint = f" (no PKI yet? run `qkdtwin kms pki init {path.parent}` first)" if pki else ""
    raise ConfigError(f"{what}: no such file: {path}{hint}", field=what, value=str(path))


def check_tls_files(cert: tuple[str, Path], key: tuple[str, Path], ca: tuple[str, Path]) -> None:
    """Check that a certificate, its key and a CA exist and load; each is ``(what, path)``.

    Raises
    ------
    ConfigError
        Naming the missing or unreadable file (and ``kms pki init`` when one is missing).
    """
    import ssl

    for what, path in (cert, key, ca):
        require_file(path, what, pki=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=str(ca[1]))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{ca[0]}: cannot load CA certificate {ca[1]} ({reason(exc)})", field=ca[0]
        ) from None
    try:
        ctx.load_cert_chain(str(cert[1]), str(key[1]))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{cert[0]}/{key[0]}: cannot load certificate {cert[1]} with key {key[1]}"
            f" ({reason(exc)})",
            field=cert[0],
        ) from None


def check_store_url(url: str, what: str = "--db") -> Any:
    """Return the parsed SQLAlchemy URL of a store, if it is one the KMS accepts.

    Raises
    ------
    ConfigError
        For anything but ``sqlite:///PATH`` and ``postgresql://...`` (also ``postgres://``
        and ``postgresql+psycopg://``); the message names the value and what is accepted.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    ok = parsed is not None and (
        (parsed.drivername == "sqlite" and bool(parsed.database))
        or parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg")
    )
    if not ok:
        raise ConfigError(
            f"{what}: not a store URL: {url!r} (use {STORE_URLS})",
            field=what,
            value=url,
            allowed=STORE_URLS,
        )
    return parsed


def open_key_store(url: str, what: str = "--db", **kwargs: Any) -> KeyStore:
    """Open a :class:`~qkdtwin.kms.KeyStore`, turning every failure into one ConfigError.

    ``kwargs`` go to the store (``kek``, ``max_key_count``, ``ttl_s``).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from qkdtwin.kms import KeyStore

    parsed = check_store_url(url, what)
    if parsed.drivername == "sqlite" and parsed.database != ":memory:":
        parent = Path(parsed.database).parent
        if not parent.is_dir():
            raise ConfigError(
                f"{what}: {url}: directory {parent} does not exist", field=what, value=url
            )
    try:
        return KeyStore(url, **kwargs)
    except SQLAlchemyError as exc:
        raise store_error(what, url, exc) from None


def store_error(what: str, url: str, exc: BaseException) -> ConfigError:
    """Return the error for a store URL that parses but cannot be opened (password hidden)."""
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # only for the message
        shown = url
    cause = one_line(getattr(exc, "orig", None) or exc)
    return ConfigError(f"{what}: cannot open the store {shown} ({cause})", field=what)


def check_kme_url(url: str) -> str:
    """Return ``url`` if it is ``https://HOST[:PORT]``; else raise a ConfigError naming it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        ok = parts.scheme == "https" and bool(parts.hostname)
        _ = parts.port  # ValueError for a port that is not a number in range
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"--kme: not a KME URL: {url!r} (use https://HOST:PORT)", field="kme", value=url
        )
    return url


def per_kme_url(url: str, kme: str) -> str:
    """Derive one KME's own store from a single ``--db`` URL.

    PostgreSQL: the schema ``qkdtwin_<kme>`` of that database (created if missing), via the
    connection's ``search_path``; SQLite: the file ``<stem>-<kme>.db`` beside the given one.

    Raises
    ------
    ConfigError
        For another kind of URL (naming it and what is accepted), or a PostgreSQL server
        that cannot be reached.
    """
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    parsed = check_store_url(url, "--db")
    if parsed.drivername == "sqlite":
        path = Path(parsed.database)
        suffix = path.suffix or ".db"
        return f"sqlite:///{path.with_name(f'{path.stem}-{kme}{suffix}')}"
    # PostgreSQL: check_store_url accepts nothing else
    schema = "qkdtwin_" + kme.replace("-", "_")
    driver = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = sa.create_engine(driver)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        engine.dispose()
    except SQLAlchemyError as exc:
        cause = one_line(getattr(exc, "orig", None) or exc)
        raise ConfigError(f"--db: cannot prepare schema {schema} ({cause})", field="db") from exc
    query = dict(parsed.query)
    query["options"] = f"-csearch_path={schema}"
    return str(driver.set(query=query).render_as_string(hide_password=False))
