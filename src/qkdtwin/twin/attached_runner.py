"""Running an attached twin live (MQTT, KME polling, service) or from a recording.

* :class:`AttachedRunner` — ``qkdtwin twin serve --attach FILE``: subscribes to the attach
  file's broker (:class:`~qkdtwin.twin.ingest.MqttIngest`; over TLS and with a login or a
  client certificate if the attach file says so), polls every KME's operator
  interface (:class:`~qkdtwin.twin.ingest.KmePoller`; each KME every reporting interval or,
  staggered, every ``kme_poll_every_s``, with the gateways' SAE key-status polls:
  :func:`~qkdtwin.twin.ingest.poll_schedule`), ticks the
  twin (stale sources, timed-out gaps) and serves its API and dashboard; with ``record`` every
  input goes to a JSON Lines recording, with the attach file copied beside it
  (``FILE.attach.yaml``).
* :func:`replay` — ``qkdtwin twin serve --replay FILE``: feeds a recording to a fresh twin in
  file order with the recorded receive times (as fast as possible, or at ``speed`` times the
  recorded pace); the same recording always gives the same alarms and state.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from qkdtwin.errors import ConfigError
from qkdtwin.kms.tls import RunningServer, serve_in_thread
from qkdtwin.twin.attach import AttachFile, load_attach_file
from qkdtwin.twin.attached import AttachedTwin
from qkdtwin.twin.attached_service import create_attached_app
from qkdtwin.twin.ingest import (
    KmePoller,
    MqttIngest,
    RawPoll,
    Recorder,
    Replayer,
    ingest_topics,
    poll_schedule,
)

__all__ = ["AttachedRunner", "attach_copy_path", "replay"]


def attach_copy_path(record: Path) -> Path:
    """Where the attach file of a recording is kept: ``<record>.attach.yaml``."""
    return record.with_name(record.name + ".attach.yaml")


def _mtls_client(cert: Path, key: Path, ca: Path) -> httpx.Client:
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return httpx.Client(verify=ctx, timeout=2.0)


def _get(client: httpx.Client, url: str) -> RawPoll:
    """One GET as a :class:`RawPoll` (never raises)."""
    t0 = time.perf_counter()
    try:
        r = client.get(url)
    except httpx.HTTPError as exc:
        return RawPoll(
            url,
            error=f"GET {url}: unreachable: {exc}",
            error_kind="unreachable",
            elapsed_s=time.perf_counter() - t0,
        )
    return RawPoll(url, r.status_code, r.text, elapsed_s=time.perf_counter() - t0)


class AttachedRunner:
    """An attached twin with its live inputs and its service.

    Parameters
    ----------
    attach
        Attach file path (or a loaded :class:`AttachFile`).
    host, port
        Where the service listens (port 0: any free port).
    record
        Recording file (JSON Lines) or ``None``.
    twin_options
        Passed to :class:`AttachedTwin` (``arl_days``, ``window_s``, ``recovery_s``).
    serve
        Start the HTTP service (benchmarks measuring the twin's CPU alone may skip it).

    Raises
    ------
    ConfigError
        From :meth:`start`, for a malformed attach file or a recording that cannot be written.
    TransportError
        From :meth:`start`, if the broker cannot be reached or refuses the twin (the message
        names its URL, never a password, and the reason).
    """

    def __init__(
        self,
        attach: str | Path | AttachFile,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: str | Path | None = None,
        serve: bool = True,
        **twin_options: Any,
    ) -> None:
        self.attach_path = None if isinstance(attach, AttachFile) else Path(attach)
        self.attach = attach if isinstance(attach, AttachFile) else load_attach_file(attach)
        self.host, self.port = host, port
        self.record_path = None if record is None else Path(record)
        self.serve = serve
        self.recorder: Recorder | None = None
        if self.record_path is not None:
            self.recorder = Recorder(self.record_path)
            copy = attach_copy_path(self.record_path)
            if self.attach_path is not None:
                shutil.copyfile(self.attach_path, copy)
            else:
                import yaml

                copy.write_text(yaml.safe_dump(self.attach.model_dump(mode="json")))
        self.twin = AttachedTwin(self.attach, on_record=self._record, **twin_options)
        self.ingest: MqttIngest | None = None
        self.poller: KmePoller | None = None
        self.http: RunningServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.record_errors = 0

    def _record(self, kind: str, key: str, payload: Any, t: float) -> None:
        rec = self.recorder
        if rec is None:
            return
        try:
            if kind == "mqtt":
                rec.record_mqtt(key, payload, t)
            else:
                rec.record_poll(key, payload, t)
        except OSError:  # a full disk stops the recording, never the twin
            self.record_errors += 1

    @property
    def url(self) -> str:
        """Base URL of the service."""
        assert self.http is not None
        return f"http://{self.host}:{self.http.port}"

    def start(self) -> AttachedRunner:
        """Connect to the broker, start polling and ticking, start the service."""
        try:
            topics = ingest_topics(self.attach.iot_topic_style, self.attach.iot_group())
            self.ingest = MqttIngest(
                self.attach.broker,
                topics,
                self.twin.on_mqtt,
                on_state=self.twin.on_state,
                ca=self.attach.mqtt_ca,
                cert=self.attach.mqtt_cert,
                key=self.attach.mqtt_key,
            ).start()
            self.twin.actuator.publish = self.ingest.publish  # the gateways' rekey commands
            if self.attach.kmes:
                self.poller = KmePoller(
                    {n: (k.url, k.cert, k.key, k.ca) for n, k in self.attach.kmes.items()},
                    timeout_s=min(2.0, max(0.5, self.attach.reporting_interval_s)),
                )
                self._spawn(self._poll_loop, "twin-kme-poll")
            self._spawn(self._tick_loop, "twin-tick")
            if self.serve:
                self.http = serve_in_thread(create_attached_app(self.twin), self.host, self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, target: Any, name: str) -> None:
        th = threading.Thread(target=target, daemon=True, name=name)
        th.start()
        self._threads.append(th)

    def _poll_loop(self) -> None:
        assert self.poller is not None
        period = max(0.5, self.attach.reporting_interval_s / self.attach.clock.rate)
        sae_clients = {
            p.name: (
                f"{self.attach.kmes[p.kme].url.rstrip('/')}/api/v1/keys/{p.slave_sae_id}/status",
                _mtls_client(p.cert, p.key, p.ca),
            )
            for p in self.attach.sae_status
        }
        # one slot of KMEs and SAE pairs per iteration: each every kme_poll_every_s, staggered
        slots = poll_schedule(
            list(self.poller.endpoints), list(sae_clients), period, self.attach.kme_poll_every_s
        )
        k = 0
        try:
            while not self._stop.is_set():
                t = time.time()
                nodes, saes = slots[k % len(slots)]
                k += 1
                if nodes:
                    for node, res in self.poller.poll(t, nodes).items():
                        if res.raw is not None:
                            self.twin.on_poll(node, res.raw, t)
                for name in saes:
                    url, client = sae_clients[name]
                    self.twin.on_poll(name, _get(client, url), t)
                self._stop.wait(max(0.0, period - (time.time() - t)))
        finally:
            for _url, client in sae_clients.values():
                client.close()

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.5):
            self.twin.tick(time.time())

    def stop(self) -> None:
        """Stop everything (idempotent)."""
        self._stop.set()
        for th in self._threads:
            th.join(10.0)
        self._threads.clear()
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.ingest is not None:
            with contextlib.suppress(Exception):
                self.ingest.close()
            self.ingest = None
        if self.poller is not None:
            self.poller.close()
            self.poller = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        self.twin.close()


def replay(
    record: str | Path,
    *,
    attach: str | Path | None = None,
    speed: float | None = None,
    tick_every_s: float = 0.5,
    twin: AttachedTwin | None = None,
    **twin_options: Any,
) -> AttachedTwin:
    """Feed a recording to a twin (a new one from the recording's attach file by default).

    Ticks are replayed too: one every ``tick_every_s`` of recorded time, as the live runner
    does, so staleness and gap timeouts happen at the same stream times.

    Raises
    ------
    ConfigError
        If the recording or its attach file cannot be read.
    """
    record = Path(record)
    if twin is None:
        path = Path(attach) if attach is not None else attach_copy_path(record)
        if not path.is_file():
            raise ConfigError(
                f"no attach file for recording {record} (looked for {path}); pass --attach",
                field="attach",
            )
        twin = AttachedTwin(load_attach_file(path), replay=True, **twin_options)
    if not record.is_file():
        raise ConfigError(f"no such recording {str(record)!r}", field="replay")
    next_tick: float | None = None
    for rec in Replayer(record, speed):
        if next_tick is None:
            next_tick = rec.t + tick_every_s
        while rec.t >= next_tick:
            twin.tick(next_tick)
            next_tick += tick_every_s
        if rec.kind == "mqtt" and rec.topic is not None and rec.payload is not None:
            twin.on_mqtt(rec.topic, rec.payload, rec.t)
        elif rec.kind == "poll" and rec.node is not None and rec.poll is not None:
            twin.on_poll(rec.node, rec.poll, rec.t)
    return twin
