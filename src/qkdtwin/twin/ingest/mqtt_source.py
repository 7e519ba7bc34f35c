"""The ingest's MQTT subscription: :class:`MqttIngest`.

One paho-mqtt client (MQTT 3.1.1, clean session, QoS 1 subscriptions) on its own network
thread, subscribed to the link-telemetry tree (``qkdtwin/link/v1/+/perf`` and ``.../state``)
and the IIoT tree (``qkdtwin/v1/#``) by default; :func:`ingest_topics` gives the filters of
gateways speaking Sparkplug B instead (``spBv1.0/<group>/#``). Every message is handed to
``on_payload(topic, payload, t_recv)`` with its receive time (``clock()``, Unix s) taken as
soon as paho delivers it; an exception raised by the callback is counted and logged, never
allowed to end the network thread.

Connection. :meth:`MqttIngest.start` connects and waits for the broker's CONNACK and every
SUBACK; an unreachable or refusing broker is a :class:`~qkdtwin.errors.TransportError`
naming the URL (its password masked) and the reason: ``not authorised`` for a refused login,
the TLS error (``certificate verify failed``, ``certificate required``) for a failed
handshake. Afterwards paho reconnects by itself (backoff ``reconnect_min_s`` ..
``reconnect_max_s``) and the subscriptions are renewed on every (re)connection, because a
clean session forgets them. Each change of state (``"connected"``, ``"reconnecting"``,
``"closed"``) is reported to ``on_state(state, t)``; the ingest router uses it to mark every
source stale when the broker is lost, so a broker outage degrades the twin instead of
stopping it.

Security. ``mqtts://HOST:PORT`` connects over TLS (default port 8883) and verifies the
broker's certificate against ``ca`` (default: the system's CAs); ``cert`` and ``key`` add a
client certificate (mutual TLS); ``mqtt(s)://USER[:PASSWORD]@HOST:PORT`` logs in, the password
from the URL or from ``QKDTWIN_MQTT_PASSWORD``. The password is never logged nor exposed:
:attr:`MqttIngest.url` and the stats show ``USER:***@``.

(:class:`qkdtwin.iot.transport.MqttTransport` is the publishing side's client: it neither
renews subscriptions after a reconnection nor reports its state, so the ingest has its own
client and reuses the transport's URL parsing, security set-up and topic matching.)
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from qkdtwin.errors import ConfigError, TransportError
from qkdtwin.interfaces.link_telemetry import TOPIC_ROOT as LINK_TOPIC_ROOT
from qkdtwin.iot.sparkplug import NAMESPACE as SPARKPLUG_NAMESPACE
from qkdtwin.iot.transport import TOPIC_ROOT as IOT_TOPIC_ROOT
from qkdtwin.iot.transport import (
    apply_security,
    broker_security,
    close_client_sockets,
    parse_broker,
    public_broker_url,
)

__all__ = [
    "DEFAULT_TOPICS",
    "ConnectionState",
    "MqttIngest",
    "MqttIngestStats",
    "ingest_topics",
]

log = logging.getLogger(__name__)

#: Link telemetry (perf and birth/death) and the whole IIoT tree.
DEFAULT_TOPICS: tuple[str, ...] = (
    f"{LINK_TOPIC_ROOT}/+/perf",
    f"{LINK_TOPIC_ROOT}/+/state",
    f"{IOT_TOPIC_ROOT}/#",
)


def ingest_topics(topic_style: str = "qkdtwin", group: str | None = None) -> tuple[str, ...]:
    """Return the filters of the link telemetry and of the IIoT gateways' topic style.

    ``"qkdtwin"``: :data:`DEFAULT_TOPICS`; ``"sparkplug"``: the link telemetry and
    ``spBv1.0/<group>/#`` (``spBv1.0/#`` without a group).
    """
    if topic_style == "qkdtwin":
        return DEFAULT_TOPICS
    if topic_style != "sparkplug":
        raise ConfigError(
            "topic_style must be qkdtwin or sparkplug", field="topic_style", value=topic_style
        )
    iot = f"{SPARKPLUG_NAMESPACE}/{group}/#" if group else f"{SPARKPLUG_NAMESPACE}/#"
    return (*DEFAULT_TOPICS[:2], iot)


ConnectionState = Literal["idle", "connecting", "connected", "reconnecting", "closed"]
PayloadHandler = Callable[[str, bytes, float], None]
StateHandler = Callable[[ConnectionState, float], None]


@dataclass(frozen=True, slots=True)
class MqttIngestStats:
    """Counters of an :class:`MqttIngest`.

    Attributes
    ----------
    url
        The broker (its password masked as ``***``).
    state
        The connection state.
    messages, bytes
        Messages delivered and their payload bytes.
    connects, disconnects
        Successful connections (the first included) and connection losses.
    callback_errors
        Exceptions raised by ``on_payload`` (caught and logged).
    last_message_t
        Receive time of the last message, Unix s.
    last_error
        The last connection or callback error, one line.
    """

    url: str
    state: ConnectionState
    messages: int
    bytes: int
    connects: int
    disconnects: int
    callback_errors: int
    last_message_t: float | None
    last_error: str | None


class MqttIngest:
    """Subscribe to the link-telemetry and IIoT topic trees and hand messages on.

    Parameters
    ----------
    broker_url
        ``mqtt://HOST:PORT`` (or ``tcp://``), ``mqtts://HOST:PORT`` (TLS), either with
        ``USER[:PASSWORD]@`` (the password may come from ``QKDTWIN_MQTT_PASSWORD`` instead).
    topics
        Topic filters subscribed with QoS 1 (default :data:`DEFAULT_TOPICS`).
    on_payload
        ``on_payload(topic, payload, t_recv)``, called on the network thread.
    on_state
        ``on_state(state, t)`` on every change of connection state.
    client_id
        MQTT client identifier (a random one if ``None``).
    ca
        ``mqtts://`` only: CA bundle (PEM) that signed the broker's certificate (``None``: the
        system's CAs).
    cert, key
        ``mqtts://`` only: client certificate and key (PEM) for mutual TLS; both or neither.
    connect_timeout_s
        How long :meth:`start` waits for CONNACK and SUBACKs, s.
    keepalive_s
        MQTT keep-alive, s: a silent broker is noticed after about 1.5 times this.
    reconnect_min_s, reconnect_max_s
        Reconnection backoff bounds, s.
    clock
        Source of receive times (default :func:`time.time`).

    Raises
    ------
    ConfigError
        For a broker URL that is not ``mqtt(s)://HOST:PORT``, an empty topic list, TLS files
        with a plain ``mqtt://`` broker, a certificate without its key (or the reverse) or a
        TLS file that does not exist.
    """

    def __init__(
        self,
        broker_url: str,
        topics: Sequence[str] = DEFAULT_TOPICS,
        on_payload: PayloadHandler | None = None,
        *,
        on_state: StateHandler | None = None,
        client_id: str | None = None,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        connect_timeout_s: float = 5.0,
        keepalive_s: int = 10,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        spec = parse_broker(broker_url)
        if spec is None or spec[0] == "memory":
            raise ConfigError(
                f"the ingest needs mqtt://HOST:PORT or mqtts://HOST:PORT, got {broker_url!r}",
                field="broker",
                value=broker_url,
                allowed="mqtt://HOST:PORT|mqtts://HOST:PORT",
            )
        self._security = broker_security(
            broker_url,
            ca=None if ca is None else str(ca),
            cert=None if cert is None else str(cert),
            key=None if key is None else str(key),
        )
        if isinstance(topics, str) or not topics:
            raise ConfigError("topics must be a non-empty list of filters", field="topics")
        if on_payload is None:
            raise ConfigError("on_payload is required", field="on_payload")
        self.host, self.port = spec
        #: The broker as shown in messages, logs and stats: the password masked.
        self.url = public_broker_url(broker_url)
        #: Whether the connection is TLS (``mqtts://``).
        self.tls = self._security is not None and self._security.tls
        self.topics = tuple(topics)
        self._on_payload = on_payload
        self._on_state = on_state
        self.client_id = client_id or f"qkdtwin-ingest-{uuid.uuid4().hex[:12]}"
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: ConnectionState = "idle"
        self._ready = threading.Event()
        self._pending: set[int] = set()
        self._connect_error: str | None = None
        self._log_error: str | None = None
        self._closing = False
        self._messages = self._bytes = 0
        self._connects = self._disconnects = self._callback_errors = 0
        self._last_message_t: float | None = None
        self._last_error: str | None = None
        self._client: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> MqttIngest:
        """Connect, subscribe and start the network thread.

        Raises
        ------
        TransportError
            If the broker cannot be reached, refuses the connection or a subscription, or
            does not answer within ``connect_timeout_s`` (the message names the URL).
        """
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        if self._client is not None:
            raise ConfigError("start() was called already", field="ingest")
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        # paho annotates the delays as int but sleeps on floats (sub-second backoff is fine).
        client.reconnect_delay_set(
            min_delay=cast(int, self.reconnect_min_s), max_delay=cast(int, self.reconnect_max_s)
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        # paho's error log says why a TLS session ended (a refused client certificate arrives
        # as an alert after the handshake); listened to until the first connection only
        client.on_log = self._on_log
        try:
            apply_security(client, self._security)
        except TransportError as exc:
            raise TransportError(f"MQTT broker {self.url}: {exc}") from None
        self._client = client
        self._set_state("connecting")
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive_s)
        except ssl.SSLError as exc:  # before OSError: SSLError is one
            close_client_sockets(client, exc)
            self._client = None
            self._set_state("closed")
            raise TransportError(
                f"TLS handshake with MQTT broker {self.url} failed: {_one_line(exc)}"
            ) from exc
        except OSError as exc:
            close_client_sockets(client, exc)
            self._client = None
            self._set_state("closed")
            raise TransportError(f"cannot reach MQTT broker {self.url}: {exc}") from exc
        client.loop_start()
        ok = self._ready.wait(self.connect_timeout_s)
        if not ok or self._connect_error is not None:
            why = self._connect_error or f"no CONNACK/SUBACK within {self.connect_timeout_s:g} s"
            self._closing = True
            client.disconnect()
            client.loop_stop()
            close_client_sockets(client)
            self._client = None
            self._set_state("closed")
            verb = "did not answer" if self._connect_error is None else "refused the connection"
            raise TransportError(f"MQTT broker {self.url} {verb}: {why}")
        client.on_log = None
        return self

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish on the broker (QoS 1): the twin's commands, e.g. a gateway's rekey.

        Raises
        ------
        TransportError
            When not connected.
        """
        from qkdtwin.errors import TransportError

        client = self._client
        if client is None or not self.connected:
            raise TransportError(f"not connected to {self.url}: cannot publish on {topic}")
        client.publish(topic, payload, qos=1)

    def close(self) -> None:
        """Disconnect and stop the network thread (idempotent)."""
        self._closing = True
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self._state != "closed":
            self._set_state("closed")

    def __enter__(self) -> MqttIngest:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- state -----------------------------------------------------------------------------
    @property
    def state(self) -> ConnectionState:
        """``"idle"``, ``"connecting"``, ``"connected"``, ``"reconnecting"`` or ``"closed"``."""
        return self._state

    @property
    def connected(self) -> bool:
        """Whether the client is connected and subscribed."""
        return self._state == "connected"

    def stats(self) -> MqttIngestStats:
        """Return the counters."""
        with self._lock:
            return MqttIngestStats(
                url=self.url,
                state=self._state,
                messages=self._messages,
                bytes=self._bytes,
                connects=self._connects,
                disconnects=self._disconnects,
                callback_errors=self._callback_errors,
                last_message_t=self._last_message_t,
                last_error=self._last_error,
            )

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until connected and subscribed; return whether it happened in time."""
        deadline = time.monotonic() + timeout_s
        while not self.connected:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _set_state(self, state: ConnectionState) -> None:
        with self._lock:
            if state == self._state:
                return
            self._state = state
        if self._on_state is not None:
            try:
                self._on_state(state, self._clock())
            except Exception as exc:
                self._note_error(f"on_state raised {type(exc).__name__}: {exc}")

    def _note_error(self, text: str, *, warn: bool = True) -> None:
        with self._lock:
            self._last_error = " ".join(text.split())[:300]
        if warn:
            log.warning("MQTT ingest %s: %s", self.url, self._last_error)

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_log(self, _c: Any, _u: Any, level: int, buf: str) -> None:
        import paho.mqtt.client as mqtt

        if level == mqtt.MQTT_LOG_ERR:
            self._log_error = _one_line(buf.removeprefix("failed to receive on socket: "))

    def _on_connect(self, client: Any, _u: Any, _flags: Any, rc: Any, _props: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            self._connect_error = _connack_reason(rc)
            sec = self._security
            if sec is not None and sec.username is not None and sec.password is None:
                self._connect_error += " (no password given: is QKDTWIN_MQTT_PASSWORD set?)"
            self._note_error(
                f"connection refused: {self._connect_error}", warn=self._state != "connecting"
            )
            self._ready.set()
            return
        mids: set[int] = set()
        for pattern in self.topics:
            result, mid = client.subscribe(pattern, qos=1)
            if mid is None or result != 0:
                self._connect_error = f"subscribe to {pattern} failed (paho rc {result})"
                self._ready.set()
                return
            mids.add(mid)
        with self._lock:
            self._pending = mids

    def _on_subscribe(
        self, _c: Any, _u: Any, mid: int, reason_codes: Any, _props: Any = None
    ) -> None:
        if any(getattr(rc, "is_failure", False) for rc in reason_codes or ()):
            self._connect_error = f"the broker refused a subscription: {reason_codes}"
            self._note_error(self._connect_error)
            self._ready.set()
            return
        with self._lock:
            self._pending.discard(mid)
            done = not self._pending
            if done:
                self._connects += 1
        if done:
            self._set_state("connected")
            self._ready.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, rc: Any, _props: Any = None) -> None:
        if self._closing:
            return
        if self._state == "connecting":
            # the first connection failed: start() reports why (nothing is logged). Before
            # CONNACK that is a refused client certificate (TLS 1.3 refuses it after the
            # handshake) or a broker that drops the client.
            if self._connect_error is None:
                why = self._log_error or f"connection closed before CONNACK ({rc})"
                sec = self._security
                if sec is not None and sec.tls and sec.cert is None:
                    why += " (does the broker want a client certificate?)"
                self._connect_error = why
            self._ready.set()
            return
        with self._lock:
            self._disconnects += 1
        self._note_error(f"connection lost ({rc}); reconnecting")
        self._set_state("reconnecting")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        t = self._clock()
        payload = bytes(msg.payload)
        with self._lock:
            self._messages += 1
            self._bytes += len(payload)
            self._last_message_t = t
        try:
            self._on_payload(msg.topic, payload, t)
        except Exception as exc:
            with self._lock:
                self._callback_errors += 1
            self._note_error(f"on_payload raised {type(exc).__name__}: {exc}")


def _one_line(exc: object) -> str:
    """Return an exception or log text as one line, without ``(_ssl.c:NNNN)``."""
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))
    return " ".join(text.split())[:300]


def _connack_reason(rc: Any) -> str:
    """Why the broker refused the CONNECT; ``not authorised`` for a refused login."""
    text = str(rc)
    low = text.lower()
    if "not authori" in low or "bad user name or password" in low:
        return f"not authorised (CONNACK: {text}): check the username, password or certificate"
    return f"CONNACK: {text}"
