"""Mutual TLS for the KMEs: a development PKI and an HTTPS server that knows its caller.

**SAE ID rule.** The SAE ID of a client is read from its *verified* certificate: the first
subject-alternative-name URI of the form ``urn:qkdtwin:sae:<SAE_ID>`` if there is one,
otherwise the subject's common name (CN). Certificates made by :func:`init_pki` carry both.

**Server.** :func:`make_server` runs uvicorn with ``ssl_cert_reqs=CERT_REQUIRED`` and the CA
bundle, so the TLS handshake itself refuses a missing certificate, one from another CA and an
expired one. uvicorn does not expose the peer certificate to the ASGI app, so the server uses
:class:`MtlsH11Protocol`, an H11 protocol that reads the certificate from the connection's
``ssl_object`` once per connection and puts the SAE ID into every request scope under
``"qkdtwin.sae_id"``, where :func:`qkdtwin.kms.api.caller_sae_id` finds it.

**Limits.** :func:`make_server` also bounds the TLS handshake (:data:`TLS_HANDSHAKE_TIMEOUT_S`,
through the event loop, see :class:`_HandshakeTimeoutLoop`), the time until a request's
headers are complete (:data:`HEADER_TIMEOUT_S`, against idle and slowloris connections), the
keep-alive (:data:`KEEP_ALIVE_TIMEOUT_S`) and the connections served at once
(:data:`MAX_CONNECTIONS`, beyond it 503 with an ETSI Error body); :class:`MtlsH11Protocol`
enforces the header timeout and the connection bound. Each comes from the app's
``KmeConfig`` unless given.

**KME ID rule.** KMEs call each other (reservation mirroring and key relay, see
:mod:`qkdtwin.kms.peering`) over the same mutual TLS. A peer KME is recognised only by a
SAN URI ``urn:qkdtwin:kme:<KME_ID>`` in its verified certificate (no CN fallback), put in the
scope under ``"qkdtwin.kme_id"``; KME certificates from :func:`init_pki` carry it together
with the client-auth usage.

**Operator rule.** An operator (the digital twin polling ``GET /kme/v1/links``, see
:mod:`qkdtwin.kms.operator`) is recognised only by a SAN URI ``urn:qkdtwin:operator:<ID>`` in
a verified certificate that names no SAE and no KME (:func:`operator_id_from_certificate`);
it goes in the scope under ``"qkdtwin.operator_id"``. Such a certificate is never an SAE: the
CN fallback of the SAE ID rule does not apply to it.

The PKI is for development and tests only: keys are written unencrypted (mode 0600).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h11
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from uvicorn.protocols.http.h11_impl import H11Protocol

from qkdtwin.errors import ConfigError, KmsError

__all__ = [
    "HEADER_TIMEOUT_S",
    "KEEP_ALIVE_TIMEOUT_S",
    "KME_URI_PREFIX",
    "MAX_CONNECTIONS",
    "OPERATOR_URI_PREFIX",
    "SAE_URI_PREFIX",
    "TLS_HANDSHAKE_TIMEOUT_S",
    "MtlsH11Protocol",
    "Pki",
    "RunningServer",
    "init_pki",
    "issue_certificate",
    "kme_id_from_certificate",
    "make_server",
    "operator_id_from_certificate",
    "sae_id_from_certificate",
    "serve_in_thread",
]

SAE_URI_PREFIX = "urn:qkdtwin:sae:"
KME_URI_PREFIX = "urn:qkdtwin:kme:"
OPERATOR_URI_PREFIX = "urn:qkdtwin:operator:"
_SCOPE_SAE_KEY = "qkdtwin.sae_id"  # same key as qkdtwin.kms.api.SCOPE_SAE_KEY
_SCOPE_KME_KEY = "qkdtwin.kme_id"  # same key as qkdtwin.kms.peering.SCOPE_KME_KEY
_SCOPE_OPERATOR_KEY = "qkdtwin.operator_id"  # same as qkdtwin.kms.operator.SCOPE_OPERATOR_KEY
_SCOPE_GONE_KEY = "qkdtwin.client_gone"  # same as qkdtwin.kms.admission.SCOPE_GONE_PROBE_KEY

# Defaults of the server limits (KmeConfig carries the same defaults; docs/kms.md "Limits").
#: Seconds a client has to complete the TLS handshake after its TCP connection is accepted.
TLS_HANDSHAKE_TIMEOUT_S = 10.0
#: Seconds from the end of the handshake, or from the first byte of a later request on the
#: same connection, until the request's headers are complete (an absolute deadline: trickling
#: bytes does not extend it).
HEADER_TIMEOUT_S = 10.0
#: Seconds an idle connection is kept open after a response (uvicorn's ``timeout_keep_alive``).
KEEP_ALIVE_TIMEOUT_S = 5.0
#: Most connections (after their handshake) served at once; a request beyond gets 503.
MAX_CONNECTIONS = 512


def _san_uri(cert: x509.Certificate, prefix: str) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(prefix) and len(uri) > len(prefix):
            return uri[len(prefix) :]
    return None


def kme_id_from_certificate(cert: x509.Certificate) -> str | None:
    """Return the KME ID a certificate names (SAN URI ``urn:qkdtwin:kme:ID`` only)."""
    return _san_uri(cert, KME_URI_PREFIX)


def operator_id_from_certificate(cert: x509.Certificate) -> str | None:
    """Return the operator ID a certificate names, or ``None``.

    Only a SAN URI ``urn:qkdtwin:operator:ID`` counts (no CN fallback), and only in a
    certificate that names no SAE and no KME: one certificate never holds two roles.
    """
    operator = _san_uri(cert, OPERATOR_URI_PREFIX)
    if operator is None or _san_uri(cert, SAE_URI_PREFIX) or _san_uri(cert, KME_URI_PREFIX):
        return None
    return operator


def sae_id_from_certificate(cert: x509.Certificate) -> str | None:
    """Return the SAE ID a certificate names (SAN URI ``urn:qkdtwin:sae:ID``, else CN).

    An operator certificate (SAN URI ``urn:qkdtwin:operator:...``) gets no CN fallback.
    """
    sae = _san_uri(cert, SAE_URI_PREFIX)
    if sae is not None:
        return sae
    if _san_uri(cert, OPERATOR_URI_PREFIX) is not None:
        return None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def issue_certificate(
    common_name: str,
    *,
    issuer_cert: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    is_ca: bool = False,
    server: bool = False,
    sae_id: str | None = None,
    kme_id: str | None = None,
    operator_id: str | None = None,
    days: float = 365.0,
    now: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Create an EC P-256 key and a certificate for it (self-signed when no issuer).

    Parameters
    ----------
    common_name
        Subject CN.
    issuer_cert, issuer_key
        The signing CA; both or neither.
    is_ca
        Make a CA certificate.
    server
        Add ``localhost`` and ``127.0.0.1`` as SANs and the server-auth usage.
    sae_id
        Add the SAN URI ``urn:qkdtwin:sae:<sae_id>`` and the client-auth usage.
    kme_id
        Add the SAN URI ``urn:qkdtwin:kme:<kme_id>`` and the client-auth usage (a KME calling
        its peers).
    operator_id
        Add the SAN URI ``urn:qkdtwin:operator:<operator_id>`` and the client-auth usage (an
        operator of the KME network, e.g. the digital twin). Not together with ``sae_id`` or
        ``kme_id``.
    days
        Validity from ``now``; negative for an already expired certificate (tests).
    now
        Start of validity (default: the current UTC time).

    Returns
    -------
    tuple of (x509.Certificate, EllipticCurvePrivateKey)
    """
    if (issuer_cert is None) != (issuer_key is None):
        raise ConfigError("give both issuer_cert and issuer_key, or neither")
    if operator_id is not None and (sae_id is not None or kme_id is not None):
        raise ConfigError(
            "an operator certificate names no SAE or KME", field="operator_id", value=operator_id
        )
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = (now, now + dt.timedelta(days=days))
    if days < 0:
        start, end = now + dt.timedelta(days=2 * days), now + dt.timedelta(days=days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    sans: list[x509.GeneralName] = []
    usages = []
    if server:
        sans += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if sae_id is not None:
        sans.append(x509.UniformResourceIdentifier(SAE_URI_PREFIX + sae_id))
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if kme_id is not None:
        sans.append(x509.UniformResourceIdentifier(KME_URI_PREFIX + kme_id))
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if operator_id is not None:
        sans.append(x509.UniformResourceIdentifier(OPERATOR_URI_PREFIX + operator_id))
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key


@dataclass(frozen=True)
class Pki:
    """Paths of a development PKI made by :func:`init_pki`.

    ``kmes``, ``saes`` and ``operators`` map each ID to its ``(cert.pem, key.pem)`` paths;
    ``kek`` is the key-encryption key file the KMEs wrap their stores with
    (:mod:`qkdtwin.kms.kek`).
    """

    ca_cert: Path
    ca_key: Path
    kmes: dict[str, tuple[Path, Path]]
    saes: dict[str, tuple[Path, Path]]
    operators: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    kek: Path | None = None


def _save(directory: Path, stem: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def init_pki(
    directory: Path,
    *,
    kme_ids: Sequence[str] = ("kme-a", "kme-b"),
    sae_ids: Sequence[str] = ("sae-a", "sae-b"),
    operator_ids: Sequence[str] = ("twin",),
    days: float = 365.0,
) -> Pki:
    """Create a development CA and certificates for KMEs, SAEs and operators.

    Files, in ``directory`` (created if missing; existing files are overwritten):
    ``ca.pem``/``ca.key``; ``<id>.pem``/``<id>.key`` for every KME (server and client
    certificate, SAN URI ``urn:qkdtwin:kme:<id>``) and every SAE (client, SAN URI
    ``urn:qkdtwin:sae:<id>``); ``operator-<id>.pem``/``.key`` for every operator (client,
    SAN URI ``urn:qkdtwin:operator:<id>``, CN ``operator:<id>``). Keys are mode 0600.
    ``kek.bin`` (mode 0600) is the key-encryption key the KMEs wrap key material with; an
    existing one is kept (the stores wrapped with it would become unreadable).

    Raises
    ------
    ConfigError
        If an ID is repeated, empty, contains a path separator, or two files would clash.
    """
    ids = [*kme_ids, *sae_ids, *operator_ids]
    stems = ["ca", *kme_ids, *sae_ids, *(f"operator-{o}" for o in operator_ids)]
    if (
        len(set(ids)) != len(ids)
        or len(set(stems)) != len(stems)
        or any(("/" in i or "\\" in i or not i) for i in ids)
    ):
        raise ConfigError(
            "KME, SAE and operator IDs must be unique, non-empty, contain no '/' and not be 'ca'"
        )
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = issue_certificate("qkdtwin development CA", is_ca=True, days=days)
    ca_paths = _save(directory, "ca", ca_cert, ca_key)
    kmes = {
        k: _save(
            directory,
            k,
            *issue_certificate(
                k, issuer_cert=ca_cert, issuer_key=ca_key, server=True, kme_id=k, days=days
            ),
        )
        for k in kme_ids
    }
    saes = {
        s: _save(
            directory,
            s,
            *issue_certificate(s, issuer_cert=ca_cert, issuer_key=ca_key, sae_id=s, days=days),
        )
        for s in sae_ids
    }
    operators = {
        o: _save(
            directory,
            f"operator-{o}",
            *issue_certificate(
                f"operator:{o}", issuer_cert=ca_cert, issuer_key=ca_key, operator_id=o, days=days
            ),
        )
        for o in operator_ids
    }
    from qkdtwin.kms.kek import create_kek

    kek = create_kek(directory / "kek.bin")  # kept if present: wrapped stores need it
    return Pki(
        ca_cert=ca_paths[0],
        ca_key=ca_paths[1],
        kmes=kmes,
        saes=saes,
        operators=operators,
        kek=kek,
    )


#: Seconds a closing TLS connection may wait for the peer's close_notify before it is aborted.
TLS_CLOSE_GRACE_S = 1.0


class MtlsH11Protocol(H11Protocol):
    """uvicorn's H11 protocol that adds the client certificate's IDs to each request scope.

    The SAE, KME and operator IDs of the verified certificate (``None`` where it names none).

    It also bounds how long a closing connection lingers: asyncio's TLS transport waits up to
    30 s for the peer's ``close_notify``, which clients that just drop the socket (``requests``)
    never send, so idle and shutdown closes are followed by an abort after
    :data:`TLS_CLOSE_GRACE_S`.

    Two limits come from the server's config (:func:`make_server`; absent on a plain
    ``uvicorn.Config``, then off):

    * ``header_timeout_s``: uvicorn times out only an idle connection *after* a response, so
      a client that never sends a request, or trickles its headers a byte at a time
      (slowloris), would hold its connection forever. A deadline is set when the handshake
      ends and whenever a new request starts arriving; it is cleared once the request's
      headers are parsed; when it passes, the connection is closed.
    * ``max_connections``: uvicorn's own ``limit_concurrency`` answers 503 with a
      ``text/plain`` "Service Unavailable", not an ETSI Error object, so it is left off and the
      same check is made here: a request arriving while more than ``max_connections``
      connections are open (or requests are in flight) gets 503 with an ETSI Error body and
      ``Connection: close``.

    Each request's scope also gets ``"qkdtwin.client_gone"``: a function that says, without
    waiting, whether the server already knows the client's connection is gone (uvicorn then
    writes nothing more on it). Admission control (:mod:`qkdtwin.kms.admission`) asks it right
    before an ``enc_keys`` response is written, to undo a reservation nobody will receive.
    """

    _lost = False
    _header_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._lost = True
        self._clear_header_timer()
        super().connection_lost(exc)

    def _clear_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _start_header_timer(self) -> None:
        timeout = getattr(self.config, "header_timeout_s", None)
        if timeout is None or self._header_timer is not None:
            return

        def expire() -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.logger.debug("closing a connection whose request headers took > %s s", timeout)
                self.transport.close()
                self._abort_later()

        self._header_timer = self.loop.call_later(timeout, expire)

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self.conn.their_state is h11.IDLE:
            self._start_header_timer()  # a new request starts: keeps the deadline already set
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # headers parsed (or the connection failed)
            self._clear_header_timer()

    def _abort_later(self) -> None:
        def abort() -> None:
            if not self._lost:
                self.transport.abort()

        self.loop.call_later(TLS_CLOSE_GRACE_S, abort)

    def timeout_keep_alive_handler(self) -> None:  # noqa: D102
        super().timeout_keep_alive_handler()
        self._abort_later()

    def shutdown(self) -> None:  # noqa: D102
        super().shutdown()
        self._abort_later()

    def connection_made(self, transport: Any) -> None:  # noqa: D102
        super().connection_made(transport)
        self._start_header_timer()  # the first request's headers are due from now on
        sae: str | None = None
        kme: str | None = None
        operator: str | None = None
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            cert = x509.load_der_x509_certificate(der)
            sae, kme = sae_id_from_certificate(cert), kme_id_from_certificate(cert)
            operator = operator_id_from_certificate(cert)
        inner = self.app
        limit: int | None = getattr(self.config, "max_connections", None)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope[_SCOPE_SAE_KEY] = sae
            scope[_SCOPE_KME_KEY] = kme
            scope[_SCOPE_OPERATOR_KEY] = operator
            # uvicorn's send is a method of this request's cycle, whose send drops every
            # message once ``disconnected`` is set (by connection_lost).
            cycle = getattr(send, "__self__", None)
            if cycle is not None and hasattr(cycle, "disconnected"):
                transport = self.transport
                scope[_SCOPE_GONE_KEY] = lambda: bool(cycle.disconnected or transport.is_closing())
            # Both sets already hold this connection and this request's task.
            if limit is not None and (len(self.connections) > limit or len(self.tasks) > limit):
                self.logger.warning("more than %d connections: answering 503", limit)
                await _too_many_connections(send, limit)
                return
            await inner(scope, receive, send)

        self.app = app


async def _too_many_connections(send: Any, limit: int) -> None:
    """Answer 503 with an ETSI Error body and close the connection."""
    from qkdtwin.kms.limits import send_etsi_error

    await send_etsi_error(
        send, 503, "too many concurrent connections", [{"max_connections": limit}]
    )


class _HandshakeTimeoutLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose TLS servers give up on a handshake after a set time.

    asyncio bounds the TLS handshake of each accepted connection by the
    ``ssl_handshake_timeout`` argument of ``loop.create_server`` (60 s when not given), but
    uvicorn calls ``create_server(..., ssl=...)`` without it and has no setting for it. Rather
    than copy uvicorn's ``Server.startup``, this loop fills in the missing argument for every
    TLS server created on it; :class:`_KmeUvicornConfig` makes uvicorn run on it.
    """

    def __init__(self, ssl_handshake_timeout: float) -> None:
        super().__init__()
        self.ssl_handshake_timeout = ssl_handshake_timeout

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None and kwargs.get("ssl_handshake_timeout") is None:
            kwargs["ssl_handshake_timeout"] = self.ssl_handshake_timeout
        return await super().create_server(*args, **kwargs)


class _KmeUvicornConfig(uvicorn.Config):
    """uvicorn settings plus the KME's limits, read by :class:`MtlsH11Protocol` and the loop.

    ``get_loop_factory`` is uvicorn's hook for choosing the event loop of
    :meth:`uvicorn.Server.run` (the ``--loop module:factory`` option uses it); here it returns
    a :class:`_HandshakeTimeoutLoop` with the handshake timeout.
    """

    def __init__(
        self,
        app: Any,
        *,
        tls_handshake_timeout_s: float,
        header_timeout_s: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.tls_handshake_timeout_s = tls_handshake_timeout_s
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections

    def get_loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop]:
        timeout = self.tls_handshake_timeout_s
        return lambda: _HandshakeTimeoutLoop(timeout)


def make_server(
    app: Any,
    *,
    host: str,
    port: int,
    certfile: Path,
    keyfile: Path,
    ca_certs: Path,
    keep_alive_s: float | None = None,
    tls_handshake_timeout_s: float | None = None,
    header_timeout_s: float | None = None,
    max_connections: int | None = None,
) -> uvicorn.Server:
    """Return a uvicorn server for ``app`` over HTTPS that requires a client certificate.

    Limits (each one left ``None`` is taken from the app's
    :class:`~qkdtwin.kms.api.KmeConfig`, ``app.state.config`` as ``create_app`` sets it,
    else from the defaults of this module):

    ``keep_alive_s``
        Seconds an idle connection stays open after a response (``keep_alive_timeout_s``,
        default :data:`KEEP_ALIVE_TIMEOUT_S`).
    ``tls_handshake_timeout_s``
        Seconds for the TLS handshake (default :data:`TLS_HANDSHAKE_TIMEOUT_S`).
    ``header_timeout_s``
        Seconds until a request's headers are complete (default :data:`HEADER_TIMEOUT_S`).
    ``max_connections``
        Most connections served at once, beyond it 503 (default :data:`MAX_CONNECTIONS`).

    The handshake timeout is a property of the event loop :meth:`uvicorn.Server.run` makes
    (:class:`_KmeUvicornConfig`); run the server with ``run()`` (as :class:`RunningServer` and
    ``qkdtwin kms serve`` do), not with ``serve()`` on a loop of your own.
    """
    kme = getattr(getattr(app, "state", None), "config", None)

    def limit(given: float | None, name: str, default: float) -> float:
        return given if given is not None else getattr(kme, name, default)

    keep_alive = limit(keep_alive_s, "keep_alive_timeout_s", KEEP_ALIVE_TIMEOUT_S)
    config = _KmeUvicornConfig(
        app,
        tls_handshake_timeout_s=limit(
            tls_handshake_timeout_s, "tls_handshake_timeout_s", TLS_HANDSHAKE_TIMEOUT_S
        ),
        header_timeout_s=limit(header_timeout_s, "header_timeout_s", HEADER_TIMEOUT_S),
        max_connections=int(limit(max_connections, "max_connections", MAX_CONNECTIONS)),
        host=host,
        port=port,
        http=MtlsH11Protocol,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        ssl_ca_certs=str(ca_certs),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_level="warning",
        access_log=False,
        # on: the app's lifespan starts the erasure sweeper of its stores
        lifespan="on",
        ws="none",
        # Do not wait forever for idle keep-alive clients when asked to stop.
        timeout_graceful_shutdown=3,
        # uvicorn types it int, but only hands it to loop.call_later: seconds as a float.
        timeout_keep_alive=keep_alive,
    )
    return uvicorn.Server(config)


class RunningServer:
    """A uvicorn server on a background thread; a context manager that always stops it.

    Parameters
    ----------
    server
        From :func:`make_server`.
    startup_timeout_s
        How long :meth:`start` waits for the socket to listen.
    """

    def __init__(self, server: uvicorn.Server, *, startup_timeout_s: float = 15.0) -> None:
        self.server = server
        self.startup_timeout_s = startup_timeout_s
        self._thread = threading.Thread(target=server.run, daemon=True, name="kme-server")

    def start(self, sleep: Callable[[float], None] = time.sleep) -> RunningServer:
        """Start the thread and wait until the server accepts connections.

        Raises
        ------
        KmsError
            If the server did not start within ``startup_timeout_s``.
        """
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                cfg = self.server.config
                raise KmsError(f"server failed to start on {cfg.host}:{cfg.port}")
            sleep(0.02)
        return self

    @property
    def port(self) -> int:
        """The port the server listens on (useful when started on port 0)."""
        for srv in self.server.servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        raise KmsError("KME server is not listening")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def serve_in_thread(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    lifespan: Literal["auto", "on", "off"] = "off",
) -> RunningServer:
    """Serve an ASGI ``app`` over plain HTTP with uvicorn on a daemon thread; return it started.

    The socket is bound first (:func:`~qkdtwin.kms._listen.listen_socket`): port 0 picks a
    free port (:attr:`RunningServer.port` reads it back) with no window for another process
    to take it, and a port in use is reported at once with the system's reason.

    Raises
    ------
    ConfigError
        If ``host:port`` cannot be bound (one line with the reason).
    KmsError
        If the server does not start (the message names host and port).
    """
    from qkdtwin.kms._listen import PreboundServer, listen_socket

    sock = listen_socket(host, port)
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(app, host=host, port=bound, log_level="warning", lifespan=lifespan)
    try:
        return RunningServer(PreboundServer(config, [sock])).start()
    except BaseException:
        sock.close()
        raise
