"""MQTT transport of the telemetry: paho-mqtt clients, an embedded amqtt broker, an in-memory bus.

Topics (Sparkplug-like ``namespace/group/message type/edge node``)::

    qkdtwin/v1/{group}/NBIRTH/{edge}   gateway birth: JSON metadata (no key, no reading)
    qkdtwin/v1/{group}/NDEATH/{edge}   gateway death: JSON, also the MQTT last will
    qkdtwin/v1/{group}/NDATA/{edge}    fixed scheme: frames of KEX and aggregate envelopes
    qkdtwin/v1/{group}/DDATA/{edge}    mobile scheme: frames of KEX and per-device envelopes

QoS: data frames and birth/death are published with QoS 1 (at least once). A frame carries
many readings, so losing one silently would cost many; duplicates that QoS 1 may cause are
caught by the replay window and counted (``rejected["replay"]``). QoS 2 would add two more
packets per frame for nothing the replay window does not already give. Every data topic is
published by one client, so the broker keeps the frames of an edge in order (a KEX record
always precedes the envelopes of its epoch, in the same frame or an earlier one).

:class:`MemoryBus` is the in-process transport boundary for unit tests and fast what-if runs:
the same interface, synchronous delivery, no sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from qkdtwin.errors import ConfigError, TransportError

__all__ = [
    "TOPIC_ROOT",
    "EmbeddedBroker",
    "MemoryBus",
    "MqttSecurity",
    "MqttTransport",
    "Transport",
    "apply_security",
    "broker_security",
    "close_client_sockets",
    "connect_transport",
    "parse_broker",
    "public_broker_url",
    "redact_broker_url",
    "topic",
    "topic_matches",
]

TOPIC_ROOT = "qkdtwin/v1"
MessageHandler = Callable[[str, bytes], None]


def topic(group: str, message_type: str, edge: str) -> str:
    """Return the topic ``qkdtwin/v1/{group}/{message_type}/{edge}``."""
    return f"{TOPIC_ROOT}/{group}/{message_type}/{edge}"


def topic_matches(pattern: str, name: str) -> bool:
    """Return whether topic ``name`` matches the MQTT filter ``pattern`` (``+`` and ``#``)."""
    p, n = pattern.split("/"), name.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(n) or (part != "+" and part != n[i]):
            return False
    return len(p) == len(n)


@dataclass(frozen=True)
class MqttSecurity:
    """How a client authenticates to an MQTT broker and protects the connection.

    Attributes
    ----------
    tls
        Connect over TLS (``mqtts://`` URLs).
    ca
        CA bundle that signed the broker's certificate (``None``: the system's CAs).
    cert, key
        Client certificate and key (mutual TLS), PEM files.
    username, password
        MQTT username and password (from the URL's ``user:password@``; the password may be
        given in ``QKDTWIN_MQTT_PASSWORD`` instead, to keep it out of process listings).
    """

    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def broker_security(
    spec: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None
) -> MqttSecurity | None:
    """Return the security of a broker URL and TLS files (``None``: plain and anonymous).

    Raises
    ------
    ConfigError
        For TLS files without ``mqtts://``, a certificate without its key (or the reverse), or
        a file that does not exist.
    """
    if spec in ("embedded", "memory"):
        if ca or cert or key:
            raise ConfigError(f"TLS files need an mqtts:// broker, not {spec!r}", field="broker")
        return None
    parts = urlsplit(spec)
    tls = parts.scheme == "mqtts"
    if (ca or cert or key) and not tls:
        raise ConfigError(
            "TLS files (--mqtt-ca/--mqtt-cert/--mqtt-key) need an mqtts:// broker, got "
            f"{redact_broker_url(spec)!r}",
            field="broker",
        )
    if bool(cert) != bool(key):
        raise ConfigError("--mqtt-cert and --mqtt-key go together", field="mqtt_cert")
    for name, path in (("mqtt_ca", ca), ("mqtt_cert", cert), ("mqtt_key", key)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file: {path}", field=name, value=path)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username and password is None:
        password = os.environ.get("QKDTWIN_MQTT_PASSWORD")
    if not tls and username is None:
        return None
    return MqttSecurity(tls, ca, cert, key, username, password)


def apply_security(client: Any, security: MqttSecurity | None) -> None:
    """Apply ``security`` to a paho-mqtt client before it connects (``None``: nothing).

    Sets the username and password, and for TLS the CA bundle (``None``: the system's CAs)
    and the client certificate and key. The broker's certificate and host name are verified.

    Raises
    ------
    TransportError
        If a TLS file cannot be loaded (not PEM, a key that does not match the certificate);
        the message names no password.
    """
    if security is None:
        return
    if security.username is not None:
        client.username_pw_set(security.username, security.password)
    if security.tls:
        try:
            client.tls_set(ca_certs=security.ca, certfile=security.cert, keyfile=security.key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise TransportError(f"TLS set-up for the MQTT broker failed: {exc}") from exc


def close_client_sockets(client: Any, exc: BaseException | None = None) -> None:
    """Close what a paho client that failed to connect leaves open.

    paho-mqtt 2 keeps the socket of a connection that failed after the TCP connect (a refused
    login, a session the broker ended) and drops a TLS socket whose handshake failed without
    closing it (it is only reachable from ``exc``'s traceback); either would be closed by the
    garbage collector with a ``ResourceWarning``. Call after ``loop_stop()``.
    """
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.close()
    tb = None if exc is None else exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket):
                with contextlib.suppress(OSError):
                    value.close()
        tb = tb.tb_next


def parse_broker(spec: str) -> tuple[str, int] | None:
    """Parse ``--broker``: ``"embedded"`` (``None``), ``"memory"`` or a broker URL.

    A broker URL is ``mqtt://[USER[:PASSWORD]@]HOST:PORT`` (default port 1883) or
    ``mqtts://...`` over TLS (default port 8883); see :func:`broker_security`.

    Returns
    -------
    (host, port) or None
        ``None`` for ``embedded``; ``("memory", 0)`` for the in-process bus.

    Raises
    ------
    ConfigError
        For anything else.
    """
    if spec == "embedded":
        return None
    if spec == "memory":
        return ("memory", 0)
    parts = urlsplit(spec)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in ("mqtt", "tcp", "mqtts")
        or not parts.hostname
        or parts.path not in ("", "/")
        or port == -1
    ):
        raise ConfigError(
            f"broker must be 'embedded', 'memory', mqtt://HOST:PORT or mqtts://HOST:PORT, "
            f"got {redact_broker_url(spec)!r}",
            field="broker",
            value=redact_broker_url(spec),
            allowed="embedded|memory|mqtt://HOST:PORT|mqtts://HOST:PORT",
        )
    return parts.hostname, port or (8883 if parts.scheme == "mqtts" else 1883)


def redact_broker_url(spec: str) -> str:
    """Return the broker URL with its password replaced by ``***`` (for messages, logs)."""
    parts = urlsplit(spec)
    if parts.password is None:
        return spec
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def public_broker_url(spec: str, *, mask_password: bool = True) -> str:
    """Return a broker URL as shown to people and written to files: no password in it.

    ``SCHEME://[USER[:***]@]HOST:PORT`` with the scheme ``mqtt`` (for ``mqtt``/``tcp``) or
    ``mqtts``, the port spelled out (1883 or 8883 by default) and the password masked as
    ``***`` (``mask_password=False``: left out, e.g. for an attach file whose reader takes the
    password from ``QKDTWIN_MQTT_PASSWORD``). ``embedded`` and ``memory`` come back as they are.

    Raises
    ------
    ConfigError
        For a malformed broker URL (see :func:`parse_broker`).
    """
    addr = parse_broker(spec)
    if addr is None or addr[0] == "memory":
        return spec
    parts = urlsplit(spec)
    scheme = "mqtts" if parts.scheme == "mqtts" else "mqtt"
    user = ""
    if parts.username:
        user = parts.username
        if parts.password is not None and mask_password:
            user += ":***"
        user += "@"
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{scheme}://{user}{host}:{addr[1]}"


class Transport(Protocol):
    """What the gateway and the aggregator need from a message bus."""

    def subscribe(self, pattern: str, handler: MessageHandler) -> None:
        """Deliver every message whose topic matches ``pattern`` to ``handler``."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish ``payload`` on ``topic``."""
        ...

    def close(self, *, graceful: bool = True) -> None:
        """Disconnect (``graceful=False``: drop the connection so the broker sends the will)."""
        ...


class _TopicNode:
    """One level of the bus's subscription tree: children by word, ``+`` and ``#`` included."""

    __slots__ = ("children", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _TopicNode] = {}
        self.subs: list[tuple[int, MessageHandler, _MemoryClient]] = []


class MemoryBus:
    """An in-process broker: :meth:`client` returns transports that deliver synchronously.

    Subscriptions are kept in a tree of topic levels, as a broker keeps them, so a publish
    costs O(levels x matching branches), not O(subscriptions): a twin with 1,000 gateways
    holds ~3,000 filters (most with a ``+``) on one bus, and a linear scan of them for every
    frame was a third of its tick. Handlers run in the order they subscribed.
    """

    def __init__(self) -> None:
        self._root = _TopicNode()
        self._seq = 0
        self._lock = threading.RLock()

    def client(self, *, will: tuple[str, bytes] | None = None) -> _MemoryClient:
        """Return a new client; ``will`` = ``(topic, payload)`` sent if it closes ungracefully."""
        return _MemoryClient(self, will)

    def _subscribe(self, pattern: str, handler: MessageHandler, client: _MemoryClient) -> None:
        with self._lock:
            self._seq += 1
            node = self._root
            for word in pattern.split("/"):
                node = node.children.setdefault(word, _TopicNode())
            node.subs.append((self._seq, handler, client))

    def _matching(self, words: list[str]) -> list[tuple[int, MessageHandler, _MemoryClient]]:
        found: list[tuple[int, MessageHandler, _MemoryClient]] = []
        level = [self._root]
        for word in words:
            nxt = []
            for node in level:
                multi = node.children.get("#")
                if multi is not None:
                    found += multi.subs
                for key in (word, "+"):
                    child = node.children.get(key)
                    if child is not None:
                        nxt.append(child)
            if not nxt:
                return found
            level = nxt
        for node in level:
            found += node.subs
            multi = node.children.get("#")  # "a/#" also matches "a"
            if multi is not None:
                found += multi.subs
        return found

    def _publish(self, topic_name: str, payload: bytes) -> None:
        with self._lock:
            found = [(n, h) for n, h, c in self._matching(topic_name.split("/")) if c.open]
        found.sort(key=lambda x: x[0])
        for _, h in found:
            h(topic_name, payload)


class _MemoryClient:
    def __init__(self, bus: MemoryBus, will: tuple[str, bytes] | None) -> None:
        self.bus = bus
        self.will = will
        self.open = True

    def subscribe(self, pattern: str, handler: MessageHandler) -> None:
        self.bus._subscribe(pattern, handler, self)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        if not self.open:
            raise TransportError("publish on a closed client")
        self.bus._publish(topic, payload)

    def close(self, *, graceful: bool = True) -> None:
        if not self.open:
            return
        self.open = False
        if not graceful and self.will is not None:
            self.bus._publish(*self.will)


class MqttTransport:
    """A paho-mqtt client on its own network thread.

    Parameters
    ----------
    host, port
        The broker.
    client_id
        MQTT client identifier (a random one if ``None``).
    will
        ``(topic, payload)`` of the last will (QoS 1), published by the broker if this client
        disappears without DISCONNECT.
    protocol
        ``"3.1.1"`` or ``"5"``.
    timeout_s
        How long to wait for CONNACK and SUBACK.

    Raises
    ------
    TransportError
        If the broker cannot be reached or refuses the connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
        protocol: str = "3.1.1",
        timeout_s: float = 10.0,
        security: MqttSecurity | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        if protocol not in ("3.1.1", "5"):
            raise ConfigError("protocol must be 3.1.1 or 5", field="mqtt_protocol", value=protocol)
        self.timeout_s = timeout_s
        self._v5 = protocol == "5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"qkdtwin-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
        )
        # Unbounded client-side queue; QoS 1 in-flight window of 64 frames.
        self._client.max_inflight_messages_set(64)
        self._client.max_queued_messages_set(0)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=False)
        apply_security(self._client, security)
        self._handlers: list[tuple[str, MessageHandler]] = []
        self._connected = threading.Event()
        self._acked: set[int] = set()
        self._ack_cv = threading.Condition()
        self._rc: Any = None
        self._log_error: str | None = None
        self._log_err_level = mqtt.MQTT_LOG_ERR
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        # until CONNACK: a session the broker ends first (a client certificate it wanted,
        # refused by an alert after a TLS 1.3 handshake) fails at once, saying why
        self._client.on_disconnect = self._on_early_disconnect
        self._client.on_log = self._on_log
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:  # includes a TLS handshake the broker or we refused
            close_client_sockets(self._client, exc)
            raise TransportError(f"cannot reach MQTT broker {host}:{port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout_s) or self._rc_failed():
            self._client.loop_stop()
            close_client_sockets(self._client)
            raise TransportError(f"MQTT broker {host}:{port} refused or did not answer: {self._rc}")
        self._client.on_log = None

    def _rc_failed(self) -> bool:
        return isinstance(self._rc, str) or bool(getattr(self._rc, "is_failure", False))

    def _on_log(self, _c: Any, _u: Any, level: int, buf: str) -> None:
        if level == self._log_err_level:
            self._log_error = " ".join(buf.removeprefix("failed to receive on socket: ").split())

    def _on_early_disconnect(
        self, _c: Any, _u: Any, _flags: Any, rc: Any, _props: Any = None
    ) -> None:
        if not self._connected.is_set():
            self._rc = self._log_error or f"connection closed before CONNACK ({rc})"
            self._connected.set()

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, rc: Any, _props: Any = None) -> None:
        self._rc = rc
        self._connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, _rcs: Any, _props: Any = None) -> None:
        with self._ack_cv:
            self._acked.add(mid)
            self._ack_cv.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        for pattern, handler in self._handlers:
            if topic_matches(pattern, msg.topic):
                handler(msg.topic, msg.payload)

    def subscribe(self, pattern: str, handler: MessageHandler) -> None:
        """Subscribe with QoS 1 and wait for the broker's SUBACK.

        Raises
        ------
        TransportError
            If the broker does not acknowledge in time.
        """
        self._handlers.append((pattern, handler))
        rc, mid = self._client.subscribe(pattern, qos=1)
        if mid is None:
            raise TransportError(f"subscribe to {pattern} failed: {rc}")
        with self._ack_cv:
            if not self._ack_cv.wait_for(lambda: mid in self._acked, self.timeout_s):
                raise TransportError(f"no SUBACK for {pattern}")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Queue ``payload`` for publication (non-blocking; paho's thread sends it)."""
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != 0:
            raise TransportError(f"publish on {topic} failed (paho rc {info.rc})")

    def close(self, *, graceful: bool = True) -> None:
        """Disconnect; ``graceful=False`` drops the TCP connection (the broker sends the will)."""
        if graceful:
            self._client.disconnect()
            self._client.loop_stop()
            return
        self._client.loop_stop()
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@dataclass
class EmbeddedBroker:
    """An amqtt MQTT broker on loopback, on its own event-loop thread.

    ``start()`` binds ``127.0.0.1`` on a free port (or ``port``); :attr:`port` tells which.
    The broker's own logs are limited to errors.
    """

    port: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it listens.

        Raises
        ------
        TransportError
            If it does not start in time.
        """
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        if self.port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = int(s.getsockname()[1])
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            # The broker is built on its own thread, with its loop current: amqtt creates
            # futures on the current event loop in Broker(), and the caller's thread may have
            # none (asyncio would then make a default loop nobody closes).
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="amqtt-broker")
        self._thread.start()
        if not ready.wait(timeout_s) or failure:
            raise TransportError(f"embedded MQTT broker did not start: {failure or 'timeout'}")
        return self

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the broker down and join its thread."""
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or self._thread is None:
            return

        async def _shutdown() -> None:
            # amqtt 0.12 waits 5 s for its broadcast task unless it is already cancelled.
            task = getattr(broker, "_broadcast_task", None)
            if task is not None:
                task.cancel()
            await broker.shutdown()
            # Then end every task the broker left (sessions, its inner broadcast step), so
            # none is destroyed pending when the loop closes.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        # Best effort: whatever the shutdown raises, the loop is stopped next anyway.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_shutdown(), loop).result(timeout_s)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            loop.close()
        self._loop = self._broker = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def connect_transport(
    broker: tuple[str, int] | MemoryBus,
    *,
    client_id: str | None = None,
    will: tuple[str, bytes] | None = None,
    protocol: str = "3.1.1",
    security: MqttSecurity | None = None,
) -> Transport:
    """Connect a client to a ``(host, port)`` MQTT broker or an in-process :class:`MemoryBus`."""
    if isinstance(broker, MemoryBus):
        return broker.client(will=will)
    return MqttTransport(
        broker[0], broker[1], client_id=client_id, will=will, protocol=protocol, security=security
    )
