"""Recording and replaying what the ingest received: :class:`Recorder`, :class:`Replayer`.

A recording is a JSON Lines file, one object per line, in the order received::

    {"t": 1700000000.123, "kind": "mqtt", "topic": "qkdtwin/link/v1/m1/perf", "payload": "<base64>"}
    {"t": 1700000001.0, "kind": "poll", "node": "A", "payload": {"url": ..., "http_status": 200,
     "body": "<response text>", "error": null, "error_kind": null, "elapsed_s": 0.004}}

``t`` is the receive (or poll) time, Unix s, the same value the ingest stages were given, so
feeding the records back (:class:`Replayer`) reproduces their state exactly. MQTT payloads
are kept byte for byte (base64); a poll keeps the raw response text, or the error, so a
malformed answer replays as malformed.

Every line is written with one ``write`` and flushed (optionally fsync'ed). A crash while
writing can leave only the last line incomplete: :func:`read_records` reports it
(:attr:`RecordLog.truncated`) and keeps every earlier line; a damaged line elsewhere is
reported in :attr:`RecordLog.bad_lines` and skipped. A :class:`Recorder` reopening such a
file first ends the incomplete line, so new records never merge with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from qkdtwin.errors import ConfigError
from qkdtwin.twin.ingest.kme_poller import PollErrorKind, RawPoll

__all__ = ["BadLine", "Record", "RecordLog", "Recorder", "Replayer", "read_records"]

RecordKind = Literal["mqtt", "poll"]
_ERROR_KINDS = frozenset(get_args(PollErrorKind))


@dataclass(frozen=True, slots=True)
class Record:
    """One recorded input.

    Attributes
    ----------
    t
        Receive (or poll) time, Unix s.
    kind
        ``"mqtt"`` or ``"poll"``.
    line
        Line number in the file (1-based).
    topic, payload
        For ``"mqtt"``: the topic and the raw payload.
    node, poll
        For ``"poll"``: the KME node and the wire-level outcome.
    """

    t: float
    kind: RecordKind
    line: int
    topic: str | None = None
    payload: bytes | None = None
    node: str | None = None
    poll: RawPoll | None = None


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that could not be read.

    Attributes
    ----------
    line
        Line number (1-based).
    reason
        What is wrong, one line.
    text
        The start of the line (at most 120 characters).
    """

    line: int
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class RecordLog:
    """Everything readable in a recording.

    Attributes
    ----------
    records
        The good records, in file order.
    bad_lines
        Lines skipped (including an incomplete last line).
    truncated
        Whether the last line is incomplete (no newline and not valid: a crash mid-write).
    """

    records: tuple[Record, ...]
    bad_lines: tuple[BadLine, ...]
    truncated: bool


class Recorder:
    """Append every received MQTT payload and every poll outcome to a JSON Lines file.

    Thread-safe (MQTT callbacks and the poll loop may write concurrently).

    Parameters
    ----------
    path
        The file (created with its parent directories; appended to if it exists).
    fsync
        Also ``os.fsync`` after every line (survives a power cut, costs a disk sync each).

    Raises
    ------
    ConfigError
        If the file cannot be opened for appending (the message names it).
    """

    def __init__(self, path: Path | str, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.lines = 0
        #: Whether an incomplete last line was found and ended when the file was opened.
        self.repaired = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 (closed by close())
            if self._fh.tell() > 0:
                with open(self.path, "rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        self._fh.write(b"\n")
                        self._fh.flush()
                        self.repaired = True
        except OSError as exc:
            raise ConfigError(
                f"cannot open recording {self.path}: {exc}", field="record", value=str(path)
            ) from None
        self._lock = threading.Lock()

    def _write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
        with self._lock:
            if self._fh.closed:
                raise ConfigError(f"recording {self.path} is closed", field="record")
            self._fh.write(line)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            self.lines += 1

    def record_mqtt(self, topic: str, payload: bytes, t: float) -> None:
        """Append one MQTT message received at ``t`` (Unix s).

        Raises
        ------
        OSError
            If the write fails (disk full); the caller decides whether to go on.
        """
        self._write(
            {
                "t": t,
                "kind": "mqtt",
                "topic": topic,
                "payload": base64.b64encode(bytes(payload)).decode("ascii"),
            }
        )

    def record_poll(self, node: str, raw: RawPoll, t: float) -> None:
        """Append one poll outcome of KME ``node`` at ``t`` (Unix s)."""
        self._write(
            {
                "t": t,
                "kind": "poll",
                "node": node,
                "payload": {
                    "url": raw.url,
                    "http_status": raw.http_status,
                    "body": raw.body,
                    "error": raw.error,
                    "error_kind": raw.error_kind,
                    "elapsed_s": raw.elapsed_s,
                },
            }
        )

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._fh.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _opt_str(v: object, name: str) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise ValueError(f"{name} must be a string or null")


def _parse(raw: bytes, lineno: int) -> Record:
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    t = obj.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise ValueError("t must be a finite number")
    kind = obj.get("kind")
    payload = obj.get("payload")
    if kind == "mqtt":
        topic = obj.get("topic")
        if not isinstance(topic, str) or not isinstance(payload, str):
            raise ValueError("an mqtt record needs a string topic and a base64 payload")
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise ValueError("payload is not base64") from None
        return Record(float(t), "mqtt", lineno, topic=topic, payload=data)
    if kind == "poll":
        node = obj.get("node")
        if not isinstance(node, str) or not isinstance(payload, dict):
            raise ValueError("a poll record needs a string node and an object payload")
        url = payload.get("url")
        status = payload.get("http_status")
        elapsed = payload.get("elapsed_s", 0.0)
        error_kind = payload.get("error_kind")
        if not isinstance(url, str):
            raise ValueError("poll payload needs a url")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
            raise ValueError("http_status must be an integer or null")
        if isinstance(elapsed, bool) or not isinstance(elapsed, int | float):
            raise ValueError("elapsed_s must be a number")
        if error_kind is not None and error_kind not in _ERROR_KINDS:
            raise ValueError(f"unknown error_kind {error_kind!r}")
        poll = RawPoll(
            url=url,
            http_status=status,
            body=_opt_str(payload.get("body"), "body"),
            error=_opt_str(payload.get("error"), "error"),
            error_kind=error_kind,
            elapsed_s=float(elapsed),
        )
        return Record(float(t), "poll", lineno, node=node, poll=poll)
    raise ValueError(f"unknown kind {kind!r}")


def _iter_file(path: Path) -> Iterator[Record | BadLine | bool]:
    """Yield records and bad lines in order; finally ``True`` if the last line is truncated."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed in finally)
    except OSError as exc:
        raise ConfigError(f"cannot read recording {path}: {exc}", field="record") from None
    truncated = False
    try:
        for lineno, raw in enumerate(fh, start=1):
            complete = raw.endswith(b"\n")
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            try:
                yield _parse(body, lineno)
            except (ValueError, UnicodeDecodeError) as exc:
                text = body[:120].decode("utf-8", "replace")
                if not complete:
                    truncated = True
                    yield BadLine(lineno, f"incomplete last line (crash mid-write?): {exc}", text)
                else:
                    yield BadLine(lineno, str(exc).splitlines()[0][:200], text)
    finally:
        fh.close()
    yield truncated


def read_records(path: Path | str) -> RecordLog:
    """Read a recording; damaged lines are reported, never fatal.

    Raises
    ------
    ConfigError
        If the file cannot be opened.
    """
    records: list[Record] = []
    bad: list[BadLine] = []
    truncated = False
    for item in _iter_file(Path(path)):
        if isinstance(item, Record):
            records.append(item)
        elif isinstance(item, BadLine):
            bad.append(item)
        else:
            truncated = item
    return RecordLog(tuple(records), tuple(bad), truncated)


class Replayer:
    """Iterate over a recording's records in file order, optionally in (scaled) real time.

    Parameters
    ----------
    path
        The recording.
    speed
        ``None``: as fast as possible. ``S > 0``: sleep so that stream time (the records'
        ``t``) advances ``S`` times as fast as wall time (1.0: real time, 10: ten times
        faster).
    sleep, clock
        Injected for tests (default :func:`time.sleep`, :func:`time.monotonic`).

    Attributes
    ----------
    bad_lines, truncated
        Filled while iterating (see :class:`RecordLog`).

    Raises
    ------
    ConfigError
        For a ``speed`` that is not ``None`` or a finite number > 0; when iteration starts,
        for a file that cannot be opened.
    """

    def __init__(
        self,
        path: Path | str,
        speed: float | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed is not None and not (
            isinstance(speed, int | float) and not isinstance(speed, bool) and 0 < speed < math.inf
        ):
            raise ConfigError(
                f"speed must be None or a finite number > 0, got {speed!r}",
                field="speed",
                value=speed,
                allowed="None | > 0",
            )
        self.path = Path(path)
        self.speed = speed
        self._sleep = sleep
        self._clock = clock
        self.bad_lines: list[BadLine] = []
        self.truncated = False

    def __iter__(self) -> Iterator[Record]:
        self.bad_lines = []
        self.truncated = False
        t0: float | None = None
        w0 = 0.0
        for item in _iter_file(self.path):
            if isinstance(item, BadLine):
                self.bad_lines.append(item)
                continue
            if not isinstance(item, Record):
                self.truncated = item
                continue
            if self.speed is not None:
                if t0 is None:
                    t0, w0 = item.t, self._clock()
                else:
                    delay = w0 + (item.t - t0) / self.speed - self._clock()
                    if delay > 0:
                        self._sleep(delay)
            yield item
