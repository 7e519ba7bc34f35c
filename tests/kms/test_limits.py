"""Limits of a KME, over raw sockets against a real mutual-TLS server (issue 15, item 4).

Body size (413 before parsing, also chunked), key_IDs per ``dec_keys``, strict JSON types,
TLS handshake and header timeouts (slowloris), keep-alive, and the connection bound (503 with
an ETSI Error body). Every server here uses short limits from :class:`KmeConfig`.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qkdtwin.kms import KeyStore, KmeConfig, create_app
from qkdtwin.kms.tls import Pki, RunningServer, init_pki, make_server

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

HANDSHAKE_S = 1.0
HEADER_S = 1.5
KEEP_ALIVE_S = 1.0
MAX_BODY = 4096
MAX_KEYS = 8
GRACE_S = 1.0  # tls.TLS_CLOSE_GRACE_S: a closed connection is aborted after at most this
SLACK_S = 1.5  # scheduling on a loaded 2-core machine


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pki"), kme_ids=["kme-1"], sae_ids=["sae-a", "sae-b"])


def _config(**limits: object) -> KmeConfig:
    return KmeConfig(
        kme_id="kme-1",
        saes={"sae-a": "kme-1", "sae-b": "kme-1"},
        max_key_per_request=MAX_KEYS,
        max_body_bytes=MAX_BODY,
        tls_handshake_timeout_s=HANDSHAKE_S,
        header_timeout_s=HEADER_S,
        keep_alive_timeout_s=KEEP_ALIVE_S,
        **limits,
    )


def _serve(pki: Pki, db: Path, config: KmeConfig) -> tuple[RunningServer, KeyStore]:
    store = KeyStore(f"sqlite:///{db}")
    store.add_keys((str(uuid.uuid4()), os.urandom(32)) for _ in range(200))
    cert, key = pki.kmes["kme-1"]
    server = make_server(
        create_app(config, store),
        host="127.0.0.1",
        port=0,
        certfile=cert,
        keyfile=key,
        ca_certs=pki.ca_cert,
    )
    return RunningServer(server).start(), store


@pytest.fixture(scope="module")
def kme(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running, store = _serve(pki, tmp_path_factory.mktemp("db") / "kme.db", _config())
    try:
        yield running
    finally:
        running.stop()
        store.close()


def _connect(pki: Pki, port: int, sae: str = "sae-a") -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(*map(str, pki.saes[sae]))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def _request(
    sock: ssl.SSLSocket,
    method: str,
    path: str,
    body: object = None,
    *,
    raw_body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    payload = (
        raw_body if raw_body is not None else b"" if body is None else json.dumps(body).encode()
    )
    head = {"Host": "kme", "Content-Type": "application/json", **(headers or {})}
    framed = "Transfer-Encoding" in head or "Content-Length" in head
    if not framed and (payload or method == "POST"):
        head["Content-Length"] = str(len(payload))
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    sock.sendall(f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + payload)
    return _read_response(sock)


def _etsi_error(body: bytes) -> dict[str, object]:
    err = json.loads(body)
    assert set(err) == {"message", "details"}
    assert isinstance(err["message"], str)
    assert isinstance(err["details"], list)
    return err


def _closed_by_peer(sock: ssl.SSLSocket) -> bool:
    """Whether the server closed ``sock`` (a TLS close_notify, EOF or reset), without blocking."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except (ssl.SSLWantReadError, BlockingIOError):  # nothing, or only a session ticket
        return False
    except (ssl.SSLError, OSError):
        return True
    finally:
        sock.settimeout(timeout)


def _wait_closed(sock: socket.socket, timeout_s: float) -> float:
    """Seconds until the server closed ``sock``; fails after ``timeout_s``."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < timeout_s:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ssl.SSLWantReadError:
            continue
        except (ssl.SSLError, OSError):
            return time.monotonic() - start
    pytest.fail(f"the server did not close the connection within {timeout_s} s")


# --- request body size -------------------------------------------------------------------


def test_declared_oversize_body_refused_before_it_is_sent(kme: RunningServer, pki: Pki) -> None:
    with _connect(pki, kme.port) as tls:
        # Only the headers go out: the 10 MB body is never sent, yet the answer comes.
        start = time.monotonic()
        status, headers, body = _request(
            tls,
            "POST",
            "/api/v1/keys/sae-b/enc_keys",
            raw_body=b"",
            headers={"Content-Length": str(10 * 1024 * 1024)},
        )
        assert time.monotonic() - start < 3.0
    assert status == 413
    assert headers["connection"] == "close"
    err = _etsi_error(body)
    assert err["details"] == [{"max_body_bytes": MAX_BODY}]


def test_chunked_oversize_body_refused_while_read(kme: RunningServer, pki: Pki) -> None:
    chunk = b"x" * 1000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    with _connect(pki, kme.port) as tls:
        status, _, body = _request(
            tls,
            "POST",
            "/api/v1/keys/sae-b/enc_keys",
            raw_body=chunked,
            headers={"Transfer-Encoding": "chunked"},
        )
    assert status == 413
    assert _etsi_error(body)["details"] == [{"max_body_bytes": MAX_BODY}]


def test_chunked_body_within_the_limit_is_served(kme: RunningServer, pki: Pki) -> None:
    part1, part2 = b'{"numb', b'er": 2}'
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(part1), part1, len(part2), part2)
    with _connect(pki, kme.port) as tls:
        status, _, body = _request(
            tls,
            "POST",
            "/api/v1/keys/sae-b/enc_keys",
            raw_body=chunked,
            headers={"Transfer-Encoding": "chunked"},
        )
    assert status == 200, body
    assert len(json.loads(body)["keys"]) == 2


# --- key_IDs per dec_keys ----------------------------------------------------------------


def test_too_many_key_ids_refused_naming_the_limit(kme: RunningServer, pki: Pki) -> None:
    with _connect(pki, kme.port, "sae-a") as a:
        status, _, body = _request(a, "GET", "/api/v1/keys/sae-b/status")
        assert status == 200
        assert json.loads(body)["max_key_per_request"] == MAX_KEYS
        status, _, body = _request(a, "POST", "/api/v1/keys/sae-b/enc_keys", {"number": MAX_KEYS})
        assert status == 200
        ids = [k["key_ID"] for k in json.loads(body)["keys"]]
    with _connect(pki, kme.port, "sae-b") as b:
        too_many = {"key_IDs": [{"key_ID": i} for i in [*ids, str(uuid.uuid4())]]}
        status, _, body = _request(b, "POST", "/api/v1/keys/sae-a/dec_keys", too_many)
        assert status == 400
        err = _etsi_error(body)
        assert "max_key_per_request" in str(err["message"])
        assert err["details"] == [{"key_IDs": MAX_KEYS + 1, "max_key_per_request": MAX_KEYS}]
        # Refused before the store: the keys are still there for a request within the limit.
        ok = {"key_IDs": [{"key_ID": i} for i in ids]}
        status, _, body = _request(b, "POST", "/api/v1/keys/sae-a/dec_keys", ok)
        assert status == 200, body
        assert [k["key_ID"] for k in json.loads(body)["keys"]] == ids


# --- strict JSON types -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/keys/sae-b/enc_keys", {"number": "3"}),
        ("/api/v1/keys/sae-b/enc_keys", {"number": 3.0}),
        ("/api/v1/keys/sae-b/enc_keys", {"number": True}),
        ("/api/v1/keys/sae-b/enc_keys", {"size": "256"}),
        ("/api/v1/keys/sae-b/enc_keys", {"additional_slave_SAE_IDs": [7]}),
        ("/api/v1/keys/sae-b/dec_keys", {"key_IDs": [{"key_ID": 5}]}),
    ],
)
def test_json_types_are_strict(kme: RunningServer, pki: Pki, path: str, body: object) -> None:
    with _connect(pki, kme.port) as tls:
        status, _, raw = _request(tls, "POST", path, body)
    assert status == 400
    assert _etsi_error(raw)["message"] == "malformed request"


def test_json_number_and_query_string_number_accepted(kme: RunningServer, pki: Pki) -> None:
    with _connect(pki, kme.port) as tls:
        status, _, body = _request(tls, "POST", "/api/v1/keys/sae-b/enc_keys", {"number": 3})
        assert status == 200
        assert len(json.loads(body)["keys"]) == 3
        status, _, body = _request(tls, "GET", "/api/v1/keys/sae-b/enc_keys?number=3&size=64")
        assert status == 200
        assert len(json.loads(body)["keys"]) == 3


# --- timeouts ----------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00"], ids=["silent", "half-hello"])
def test_handshake_that_never_completes_is_closed(kme: RunningServer, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", kme.port), timeout=5.0) as raw:
        raw.sendall(sent)
        elapsed = _wait_closed(raw, HANDSHAKE_S + SLACK_S + 3.0)
    assert HANDSHAKE_S * 0.8 <= elapsed <= HANDSHAKE_S + SLACK_S


def test_connection_that_sends_nothing_is_closed(kme: RunningServer, pki: Pki) -> None:
    with _connect(pki, kme.port) as tls:
        elapsed = _wait_closed(tls, HEADER_S + GRACE_S + SLACK_S + 3.0)
    assert HEADER_S * 0.8 <= elapsed <= HEADER_S + GRACE_S + SLACK_S


def test_idle_keep_alive_connection_is_closed(kme: RunningServer, pki: Pki) -> None:
    with _connect(pki, kme.port) as tls:
        assert _request(tls, "GET", "/api/v1/keys/sae-b/status")[0] == 200
        elapsed = _wait_closed(tls, KEEP_ALIVE_S + GRACE_S + SLACK_S + 3.0)
    assert elapsed <= KEEP_ALIVE_S + GRACE_S + SLACK_S


def test_slowloris_does_not_stop_a_normal_client(kme: RunningServer, pki: Pki) -> None:
    """50 connections trickle header lines; the KME still serves a client at once, and closes
    every trickler at its header deadline although each keeps sending."""
    slow: list[ssl.SSLSocket] = []
    connected_at: list[float] = []
    try:
        for _ in range(50):
            slow.append(_connect(pki, kme.port))
            connected_at.append(time.monotonic())
            slow[-1].sendall(b"GET /api/v1/keys/sae-b/status HTTP/1.1\r\nHost: kme\r\n")
        closed_after: dict[int, float] = {}
        served_in: float | None = None
        open_when_served = 0
        deadline = time.monotonic() + HEADER_S + GRACE_S + SLACK_S + 3.0
        while len(closed_after) < len(slow) and time.monotonic() < deadline:
            for i, s in enumerate(slow):
                if i in closed_after:
                    continue
                if _closed_by_peer(s):
                    closed_after[i] = time.monotonic() - connected_at[i]
                    continue
                try:
                    s.sendall(b"X-Trickle: 1\r\n")
                except (ssl.SSLError, OSError):
                    closed_after[i] = time.monotonic() - connected_at[i]
            if served_in is None:
                open_when_served = len(slow) - len(closed_after)
                start = time.monotonic()
                with _connect(pki, kme.port) as tls:
                    status, _, _ = _request(tls, "GET", "/api/v1/keys/sae-b/status")
                assert status == 200
                served_in = time.monotonic() - start
            time.sleep(0.2)
        assert served_in is not None
        assert served_in < 2.0
        assert open_when_served >= 25  # served while the tricklers held their connections
        assert len(closed_after) == len(slow), "some tricklers were never closed"
        assert max(closed_after.values()) <= HEADER_S + GRACE_S + SLACK_S
    finally:
        for s in slow:
            s.close()


# --- concurrent connections --------------------------------------------------------------


def test_connections_beyond_the_bound_get_an_etsi_503(pki: Pki, tmp_path: Path) -> None:
    running, store = _serve(pki, tmp_path / "kme.db", _config(max_connections=2))
    try:
        first, second = _connect(pki, running.port), _connect(pki, running.port)
        for s in (first, second):  # two connections held open by keep-alive
            assert _request(s, "GET", "/api/v1/keys/sae-b/status")[0] == 200
        with _connect(pki, running.port) as third:
            status, headers, body = _request(third, "GET", "/api/v1/keys/sae-b/status")
        assert status == 503
        assert headers["connection"] == "close"
        assert _etsi_error(body)["details"] == [{"max_connections": 2}]
        first.close()
        deadline = time.monotonic() + 5.0
        while len(running.server.server_state.connections) > 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with _connect(pki, running.port) as again:
            assert _request(again, "GET", "/api/v1/keys/sae-b/status")[0] == 200
        second.close()
    finally:
        running.stop()
        store.close()


def test_server_limits_come_from_the_kme_config(pki: Pki, tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path / 'kme.db'}")
    cert, key = pki.kmes["kme-1"]
    args = {"host": "127.0.0.1", "port": 0, "certfile": cert, "keyfile": key}
    app = create_app(_config(max_connections=7), store)
    cfg = make_server(app, ca_certs=pki.ca_cert, **args).config
    assert (cfg.tls_handshake_timeout_s, cfg.header_timeout_s) == (HANDSHAKE_S, HEADER_S)
    assert (cfg.timeout_keep_alive, cfg.max_connections) == (KEEP_ALIVE_S, 7)
    cfg = make_server(app, ca_certs=pki.ca_cert, header_timeout_s=3.0, **args).config
    assert cfg.header_timeout_s == 3.0
    defaults = KmeConfig(kme_id="k", saes={})
    assert (defaults.max_body_bytes, defaults.tls_handshake_timeout_s) == (65536, 10.0)
    assert (defaults.header_timeout_s, defaults.keep_alive_timeout_s) == (10.0, 5.0)
    assert defaults.max_connections == 512
    store.close()
