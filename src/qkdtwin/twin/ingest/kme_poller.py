"""Polling the KMEs' operator endpoint: :class:`KmePoller`.

In attach mode the twin learns the key pools from each KME's operator endpoint
``GET /kme/v1/links``, called over mutual TLS with an operator certificate. The response
(:class:`KmeLinksResponse`)::

    {"kme_id": "kme-a", "time": 1700000000.0,
     "links": [{"peer": "kme-b", "enabled": true, "available": 120, "owned": 60,
                "reserved": 2, "added_total": 4000, "delivered_total": 3800,
                "erased_total": 3790, "discarded_total": 12}],
     "relayed": {"available": ..., ...seven counts...} | null}

Counts are keys; ``*_total`` are monotonic counters since the store was created. ``peer`` is
null for the single pseudo-link of a KME without a network (:mod:`qkdtwin.kms.operator`).

Every poll of every KME gives a :class:`KmePollResult`: the parsed response, or one line
naming the URL and what went wrong (``error_kind``: ``"unreachable"``, ``"tls"``,
``"timeout"``, ``"unauthorized"`` (HTTP 401/403: wrong credentials), ``"http"`` (another
status), ``"malformed"`` (a body that is not the schema), ``"busy"`` (the previous request to
that KME has not finished) or ``"error"``). :meth:`KmePoller.poll` never raises.

The KMEs are polled concurrently (one worker thread and one HTTP client per KME); a poll
returns after at most ``timeout_s`` (+ scheduling), so a dead KME never delays the others: a
request still running at the deadline is reported ``"timeout"``, and that KME is skipped
(``"busy"``) until it ends.

Status per KME: ``"never-seen"`` until its first good poll; ``"stale"`` after
``stale_after`` consecutive failed polls; ``"ok"`` otherwise. Rates between two good polls
(keys/s, per peer): ``consumption`` from ``delivered_total``, ``production`` from
``added_total``; the interval is the difference of the KME's own ``time`` fields (the poll
times if those do not advance); a counter that went down (a KME restart) gives no rate.

Replay: :meth:`KmePoller.apply` turns a recorded :class:`RawPoll` into the same result
:meth:`~KmePoller.poll` produced, so a recording replays deterministically.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qkdtwin.errors import ConfigError

__all__ = [
    "LINKS_PATH",
    "MAX_POLLS_PER_S",
    "KmeEndpoint",
    "KmeKeyCounts",
    "KmeLinkCounters",
    "KmeLinksResponse",
    "KmePollResult",
    "KmePoller",
    "KmeState",
    "PollErrorKind",
    "RawPoll",
    "poll_schedule",
    "poll_slots",
]

#: Path of the operator endpoint on a KME.
LINKS_PATH = "/kme/v1/links"

KmeState = Literal["ok", "stale", "never-seen"]
PollErrorKind = Literal[
    "unreachable", "tls", "timeout", "unauthorized", "http", "malformed", "busy", "error"
]
_MAX_BODY = 4 * 1024 * 1024


class KmeKeyCounts(BaseModel):
    """Key counts of one key store of a KME: gauges now, totals since the store was created.

    Counts are keys. Unknown extra fields are ignored (a newer KME may report more).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    available: int = Field(ge=0, description="unexpired keys in the pool, keys")
    owned: int = Field(ge=0, description="available keys this KME may hand out, keys")
    reserved: int = Field(ge=0, description="keys reserved for SAEs, not yet erased, keys")
    added_total: int = Field(ge=0, description="keys ever stored, keys")
    delivered_total: int = Field(ge=0, description="keys that left the pool for use, keys")
    erased_total: int = Field(ge=0, description="keys whose material was dropped, keys")
    discarded_total: int = Field(ge=0, description="available keys erased unused, keys")


class KmeLinkCounters(KmeKeyCounts):
    """One QKD link of a KME: the peer, whether usable, and the link store's counts."""

    peer: str | None = Field(
        description="the KME at the other end; null for the single pseudo-link of a KME "
        "without a network"
    )
    enabled: bool = Field(description="whether the KME considers the link usable")


class KmeLinksResponse(BaseModel):
    """Body of ``GET /kme/v1/links``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kme_id: str = Field(min_length=1)
    time: float = Field(description="the KME's clock, Unix s (ISO 8601 accepted)")
    links: list[KmeLinkCounters]
    relayed: KmeKeyCounts | None = Field(
        default=None, description="the store of relayed end-to-end keys; null if none"
    )

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
            try:
                parsed = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("time must be Unix seconds or ISO 8601") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed.timestamp()
        return v


@dataclass(frozen=True, slots=True)
class KmeEndpoint:
    """How to reach one KME's operator endpoint.

    Attributes
    ----------
    url
        Base URL (``https://host:port``) or the full URL of ``/kme/v1/links``.
    cert, key
        The operator's certificate and private key (PEM); ``None`` for plain HTTP.
    ca
        CA bundle that signed the KME's certificate; ``None`` for plain HTTP.
    """

    url: str
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def links_url(self) -> str:
        """The full URL polled."""
        base = self.url.rstrip("/")
        return base if base.endswith(LINKS_PATH) else base + LINKS_PATH


@dataclass(frozen=True, slots=True)
class RawPoll:
    """What one request returned on the wire (what is recorded and replayed).

    Attributes
    ----------
    url
        The URL polled.
    http_status
        The HTTP status, ``None`` if no response came.
    body
        The response body as text (``None`` without a response).
    error
        One line naming the URL and what went wrong, ``None`` if a response came.
    error_kind
        The class of ``error``.
    elapsed_s
        Duration of the request, s.
    """

    url: str
    http_status: int | None = None
    body: str | None = None
    error: str | None = None
    error_kind: PollErrorKind | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class KmePollResult:
    """One poll of one KME.

    Attributes
    ----------
    node
        The node name it was configured under.
    url
        The URL polled.
    t
        The poll time given to :meth:`KmePoller.poll`, Unix s.
    ok
        Whether a valid response came.
    response
        The parsed response, if ``ok``.
    error, error_kind
        One line naming the URL, and its class, if not ``ok``.
    status
        The KME's status after this poll: ``"ok"``, ``"stale"`` or ``"never-seen"``.
    consecutive_failures
        Failed polls in a row, this one included.
    raw
        The wire-level outcome (what :class:`~qkdtwin.twin.ingest.record.Recorder` records).
    consumption, production
        Keys per second per peer (the ``peer`` field, ``None`` for a KME's pseudo-link)
        delivered for use and added to the pool since the previous good poll (peers without
        a previous sample, or whose counter went down, are absent).
    """

    node: str
    url: str
    t: float
    ok: bool
    response: KmeLinksResponse | None
    error: str | None
    error_kind: PollErrorKind | None
    status: KmeState
    consecutive_failures: int
    raw: RawPoll
    consumption: dict[str | None, float] = field(default_factory=dict)
    production: dict[str | None, float] = field(default_factory=dict)


@dataclass
class _KmeState:
    failures: int = 0
    ever_ok: bool = False
    last: KmeLinksResponse | None = None
    last_now: float | None = None


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _is_tls(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return True
        text = str(cur)
        if "SSL" in text or "CERTIFICATE" in text.upper() or "TLS" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _classify(exc: BaseException, url: str) -> tuple[PollErrorKind, str]:
    detail = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", detail
    if _is_tls(exc):
        return "tls", detail
    if url.startswith("https://") and isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        # Under TLS 1.3 a server that refuses the client certificate completes the handshake
        # and then closes the connection: the client sees a silent disconnect, not an alert.
        return "tls", f"{detail} (closed after the TLS handshake: client certificate refused?)"
    if isinstance(exc, httpx.TransportError):
        return "unreachable", detail
    return "error", detail


#: Most polls per second (KME link polls and SAE key-status polls together) a staggered poll
#: schedule aims at (:func:`poll_slots`, :func:`poll_schedule`).
MAX_POLLS_PER_S = 100.0


def poll_slots(
    nodes: Sequence[str], period_s: float, poll_every_s: float | None = None
) -> list[list[str]]:
    """Split the KMEs into staggered slots: the poll loop polls one slot every ``period_s``.

    Each KME is then polled once every ``len(slots) * period_s`` seconds, about
    ``poll_every_s``, and a loop iteration sends about ``len(nodes) / len(slots)`` requests
    instead of one to every KME. ``poll_every_s`` ``None`` is automatic: every KME every
    ``period_s`` while that stays within :data:`MAX_POLLS_PER_S` polls a second, else as often
    as that rate allows (1,100 KMEs polled every 1 s: every 11 s).

    Raises
    ------
    ConfigError
        If ``period_s`` or ``poll_every_s`` is not positive.
    """
    m = _slot_count(len(nodes), period_s, poll_every_s)
    return [list(nodes[i::m]) for i in range(m)]


def poll_schedule(
    kmes: Sequence[str],
    saes: Sequence[str],
    period_s: float,
    poll_every_s: float | None = None,
) -> list[tuple[list[str], list[str]]]:
    """Stagger the KMEs' link polls and the gateways' SAE key-status polls together.

    Like :func:`poll_slots`, over both kinds of poll: the loop takes one ``(kmes, saes)`` slot
    every ``period_s``, so each KME and each SAE pair is polled once every ``len(slots) *
    period_s`` seconds, about ``poll_every_s``; automatic (``None``) keeps the two kinds
    together within :data:`MAX_POLLS_PER_S` polls a second. (Polling every SAE pair every
    period, as the twin once did, is 1,000 requests a second at 1,000 gateways.)

    Raises
    ------
    ConfigError
        If ``period_s`` or ``poll_every_s`` is not positive.

    Examples
    --------
    >>> poll_schedule(["A", "B"], ["gw1", "gw2", "gw3", "gw4"], 1.0, 2.0)
    [(['A'], ['gw1', 'gw3']), (['B'], ['gw2', 'gw4'])]
    """
    m = _slot_count(len(kmes) + len(saes), period_s, poll_every_s)
    return [(list(kmes[i::m]), list(saes[i::m])) for i in range(m)]


def _slot_count(n: int, period_s: float, poll_every_s: float | None) -> int:
    """Slots that spread ``n`` polls to one each every ``poll_every_s`` (see :func:`poll_slots`)."""
    if not period_s > 0:
        raise ConfigError("period_s must be > 0", field="period_s", value=period_s)
    if poll_every_s is not None and not poll_every_s > 0:
        raise ConfigError(
            "kme_poll_every_s must be > 0", field="kme_poll_every_s", value=poll_every_s
        )
    every = poll_every_s if poll_every_s is not None else n / MAX_POLLS_PER_S
    return max(1, min(n, round(every / period_s)))


class KmePoller:
    """Poll ``GET /kme/v1/links`` of several KMEs concurrently.

    Parameters
    ----------
    kmes
        Node name to :class:`KmeEndpoint`, or to a tuple ``(url, cert, key, ca)``.
    timeout_s
        Longest a poll waits for any KME, s (> 0); also each request's HTTP timeout.
    stale_after
        Consecutive failed polls after which a KME is ``"stale"`` (>= 1).
    transport
        An httpx transport for every client (tests: ``httpx.MockTransport``); ``None`` for
        real connections.

    Raises
    ------
    ConfigError
        For an empty ``kmes``, a parameter out of range, a URL that is not http(s), or
        certificate files that cannot be loaded (the message names the file).
    """

    def __init__(
        self,
        kmes: Mapping[
            str, KmeEndpoint | tuple[str, Path | str | None, Path | str | None, Path | str | None]
        ],
        timeout_s: float = 2.0,
        *,
        stale_after: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not kmes:
            raise ConfigError("kmes must name at least one KME", field="kmes")
        if not (isinstance(timeout_s, int | float) and 0 < timeout_s < float("inf")):
            raise ConfigError("timeout_s must be > 0", field="timeout_s", value=timeout_s)
        if isinstance(stale_after, bool) or not isinstance(stale_after, int) or stale_after < 1:
            raise ConfigError("stale_after must be >= 1", field="stale_after", value=stale_after)
        self.timeout_s = float(timeout_s)
        self.stale_after = stale_after
        self.endpoints: dict[str, KmeEndpoint] = {}
        self._clients: dict[str, httpx.Client] = {}
        try:
            for node, spec in kmes.items():
                ep = spec if isinstance(spec, KmeEndpoint) else _endpoint(spec)
                if not ep.url.startswith(("http://", "https://")):
                    raise ConfigError(
                        f"KME {node!r}: URL must be http(s)://, got {ep.url!r}",
                        field="url",
                        value=ep.url,
                    )
                self.endpoints[node] = ep
                self._clients[node] = httpx.Client(
                    verify=_ssl_context(node, ep),
                    timeout=self.timeout_s,
                    transport=transport,
                    follow_redirects=False,
                )
        except BaseException:
            self.close()
            raise
        self._state = {n: _KmeState() for n in self.endpoints}
        self._pool = cf.ThreadPoolExecutor(
            max_workers=len(self.endpoints), thread_name_prefix="kme-poll"
        )
        self._inflight: dict[str, cf.Future[RawPoll]] = {}

    # -- polling ---------------------------------------------------------------------------
    def _fetch(self, node: str) -> RawPoll:
        url = self.endpoints[node].links_url
        t0 = time.perf_counter()
        try:
            with self._clients[node].stream("GET", url) as r:
                chunks: list[bytes] = []
                size = 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > _MAX_BODY:
                        return RawPoll(
                            url,
                            r.status_code,
                            None,
                            f"GET {url}: malformed: body larger than {_MAX_BODY} bytes",
                            "malformed",
                            time.perf_counter() - t0,
                        )
                    chunks.append(chunk)
            body = b"".join(chunks).decode("utf-8", "replace")
            return RawPoll(url, r.status_code, body, elapsed_s=time.perf_counter() - t0)
        except Exception as exc:
            kind, detail = _classify(exc, url)
            return RawPoll(
                url,
                error=f"GET {url}: {kind}: {detail}",
                error_kind=kind,
                elapsed_s=time.perf_counter() - t0,
            )

    def poll(self, now: float, nodes: Sequence[str] | None = None) -> dict[str, KmePollResult]:
        """Poll every KME (or those in ``nodes``) concurrently; never raises.

        Parameters
        ----------
        now
            The poll time, Unix s (stamped on the results; rates fall back to it).
        nodes
            The KMEs to poll now (a staggered poll, :func:`poll_slots`); ``None``: all.

        Returns
        -------
        dict of str to KmePollResult
            One result per polled node, in configuration order.

        Raises
        ------
        ConfigError
            If ``nodes`` names a KME that is not configured.
        """
        if nodes is None:
            chosen = list(self.endpoints)
        else:
            unknown = sorted(set(nodes) - set(self.endpoints))
            if unknown:
                raise ConfigError(f"unknown KME(s): {', '.join(unknown)}", field="nodes")
            wanted = set(nodes)
            chosen = [n for n in self.endpoints if n in wanted]
        raws: dict[str, RawPoll] = {}
        submitted: dict[str, cf.Future[RawPoll]] = {}
        for node in chosen:
            ep = self.endpoints[node]
            prev = self._inflight.get(node)
            if prev is not None and not prev.done():
                raws[node] = RawPoll(
                    ep.links_url,
                    error=f"GET {ep.links_url}: busy: the previous request has not finished",
                    error_kind="busy",
                )
                continue
            try:
                submitted[node] = self._inflight[node] = self._pool.submit(self._fetch, node)
            except RuntimeError as exc:  # pool shut down
                raws[node] = RawPoll(
                    ep.links_url, error=f"GET {ep.links_url}: error: {exc}", error_kind="error"
                )
        if submitted:
            cf.wait(submitted.values(), timeout=self.timeout_s)
        for node, fut in submitted.items():
            url = self.endpoints[node].links_url
            if fut.done():
                try:
                    raws[node] = fut.result()
                except Exception as exc:  # _fetch catches everything; be safe anyway
                    raws[node] = RawPoll(url, error=f"GET {url}: error: {exc}", error_kind="error")
            else:
                raws[node] = RawPoll(
                    url,
                    error=f"GET {url}: timeout: no answer within {self.timeout_s:g} s",
                    error_kind="timeout",
                    elapsed_s=self.timeout_s,
                )
        return {node: self.apply(node, raws[node], now) for node in chosen}

    def apply(self, node: str, raw: RawPoll, now: float) -> KmePollResult:
        """Turn one wire-level outcome into a result and update the KME's status.

        Used by :meth:`poll`, and to replay a recording.

        Raises
        ------
        ConfigError
            For a node that is not configured.
        """
        st = self._node(node)
        response: KmeLinksResponse | None = None
        error, kind = raw.error, raw.error_kind
        if error is None:
            if raw.http_status in (401, 403):
                error, kind = (
                    f"GET {raw.url}: unauthorized: HTTP {raw.http_status} "
                    "(wrong or missing operator credentials)",
                    "unauthorized",
                )
            elif raw.http_status != 200:
                snippet = _one_line(raw.body or "", 120)
                error, kind = f"GET {raw.url}: http: HTTP {raw.http_status} {snippet}", "http"
            else:
                try:
                    response = KmeLinksResponse.model_validate_json(raw.body or "")
                except ValidationError as exc:
                    err = exc.errors()[0]
                    loc = ".".join(str(p) for p in err["loc"]) or "body"
                    error = f"GET {raw.url}: malformed: {loc}: {_one_line(str(err['msg']), 160)}"
                    kind = "malformed"
        consumption: dict[str | None, float] = {}
        production: dict[str | None, float] = {}
        if response is not None:
            if st.last is not None and st.last_now is not None:
                dt_s = response.time - st.last.time
                if not dt_s > 0:
                    dt_s = now - st.last_now
                if dt_s > 0:
                    before = {lk.peer: lk for lk in st.last.links}
                    for lk in response.links:
                        old = before.get(lk.peer)
                        if old is None:
                            continue
                        if lk.delivered_total >= old.delivered_total:
                            consumption[lk.peer] = (lk.delivered_total - old.delivered_total) / dt_s
                        if lk.added_total >= old.added_total:
                            production[lk.peer] = (lk.added_total - old.added_total) / dt_s
            st.failures = 0
            st.ever_ok = True
            st.last, st.last_now = response, now
        else:
            st.failures += 1
        return KmePollResult(
            node=node,
            url=raw.url,
            t=now,
            ok=response is not None,
            response=response,
            error=error,
            error_kind=kind,
            status=self._status_of(st),
            consecutive_failures=st.failures,
            consumption=consumption,
            production=production,
            raw=raw,
        )

    def _status_of(self, st: _KmeState) -> KmeState:
        if not st.ever_ok:
            return "never-seen"
        return "stale" if st.failures >= self.stale_after else "ok"

    def _node(self, node: str) -> _KmeState:
        st = self._state.get(node)
        if st is None:
            raise ConfigError(f"unknown KME node {node!r}", field="node", value=node)
        return st

    def status(self, node: str) -> KmeState:
        """Return ``"ok"``, ``"stale"`` or ``"never-seen"`` for one node.

        Raises
        ------
        ConfigError
            For a node that is not configured.
        """
        st = self._node(node)
        return self._status_of(st)

    def statuses(self) -> dict[str, KmeState]:
        """Return the status of every node."""
        return {n: self._status_of(st) for n, st in self._state.items()}

    def close(self) -> None:
        """Close the HTTP clients and the worker pool (running requests are abandoned)."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for client in getattr(self, "_clients", {}).values():
            client.close()

    def __enter__(self) -> KmePoller:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _endpoint(
    spec: tuple[str, Path | str | None, Path | str | None, Path | str | None],
) -> KmeEndpoint:
    if not (isinstance(spec, tuple) and len(spec) == 4):
        raise ConfigError("a KME must be a KmeEndpoint or (url, cert, key, ca)", field="kmes")
    url, cert, key, ca = spec
    return KmeEndpoint(
        str(url),
        None if cert is None else Path(cert),
        None if key is None else Path(key),
        None if ca is None else Path(ca),
    )


def _ssl_context(node: str, ep: KmeEndpoint) -> ssl.SSLContext | bool:
    if ep.url.startswith("http://"):
        return False
    if (ep.cert is None) != (ep.key is None):
        raise ConfigError(f"KME {node!r}: give both cert and key, or neither", field="cert")
    try:
        ctx = (
            ssl.create_default_context(cafile=str(ep.ca))
            if ep.ca is not None
            else ssl.create_default_context()
        )
        if ep.cert is not None and ep.key is not None:
            ctx.load_cert_chain(str(ep.cert), str(ep.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"KME {node!r}: cannot load TLS files (cert {ep.cert}, key {ep.key}, ca {ep.ca}): "
            f"{exc}",
            field="cert",
        ) from None
    return ctx
