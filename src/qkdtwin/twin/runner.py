"""Running the twin service in-process, listening to its event stream, and the guided tour.

* :class:`ServiceThread` serves :func:`qkdtwin.twin.service.create_twin_app` with uvicorn on a
  thread (the CLI's bounded modes, the browser test and the benchmark use it);
* :class:`EventListener` reads ``/api/events`` on a thread and stamps every event with the
  ``time.perf_counter()`` of its arrival, which is how event-to-dashboard latency is measured;
* :func:`run_tour` is the two-minute tour of the README, scripted: inject an attack, wait for
  the alarm and the rerouting, run a what-if, clear the attack and wait for the link to return.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, TypedDict

import httpx
import uvicorn

from qkdtwin.errors import ConfigError, KmsError
from qkdtwin.kms._listen import PreboundServer, listen_socket
from qkdtwin.kms.tls import RunningServer
from qkdtwin.twin.loop import Twin
from qkdtwin.twin.service import create_twin_app

__all__ = ["EventListener", "ServiceThread", "TourResult", "TourState", "run_tour"]


class TourState(TypedDict):
    """The service's links and network after the tour (JSON as served)."""

    links: list[dict[str, Any]]
    network: dict[str, Any]


class TourResult(TypedDict):
    """What :func:`run_tour` measured; the service's answers as the JSON it served."""

    link: str
    attack: dict[str, Any]
    alarm: dict[str, Any]
    event_to_dashboard_ms: float
    alarm_to_reroute_ms: float | None
    what_if: dict[str, Any]
    restore_ms: float
    state: TourState


class ServiceThread:
    """The twin service on a uvicorn server running in a daemon thread.

    The listening socket is bound when the object is made (``port=0``: the system picks a
    free port, read back in :attr:`port`), so no other process can take the port between
    choosing and serving it; the server runs with :class:`~qkdtwin.kms.tls.RunningServer`,
    the one threaded runner of the package.

    Parameters
    ----------
    twin
        The twin (its tick thread is started and stopped with the server).
    host, port
        Where to listen (``port=0``: a free port).

    Raises
    ------
    ConfigError
        If ``host:port`` cannot be bound (in use, not an address of this machine).
    """

    def __init__(self, twin: Twin, host: str = "127.0.0.1", port: int = 0) -> None:
        self.twin = twin
        self.host = host
        self._sock = listen_socket(host, port)
        self.port = int(self._sock.getsockname()[1])
        cfg = uvicorn.Config(
            create_twin_app(twin), host=host, port=self.port, log_level="warning", lifespan="on"
        )
        self.server = PreboundServer(cfg, [self._sock])
        self._running = RunningServer(self.server)

    @property
    def url(self) -> str:
        """Base URL of the service."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServiceThread:
        """Start serving and wait until the server accepts requests."""
        self._running.startup_timeout_s = timeout
        try:
            self._running.start()
        except KmsError:
            self._sock.close()
            raise ConfigError(
                f"the twin service did not start on {self.url}", field="port"
            ) from None
        return self

    def stop(self) -> None:
        """Stop the server (and with it the twin's tick thread)."""
        self._running.stop(30.0)
        self._sock.close()  # closed by uvicorn once it served; never served: closed here


class EventListener:
    """Collect the events of ``URL/api/events`` on a thread, each with its arrival time."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/api/events"
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="twin-sse")
        self.connected = threading.Event()

    def _run(self) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the service went away: the stream ends
            self._read()

    def _read(self) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(5.0, read=None)) as client,
            client.stream("GET", self.url) as resp,
        ):
            self.connected.set()
            data: list[str] = []
            for line in resp.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    ev = json.loads("\n".join(data))
                    data = []
                    with self._cond:
                        self.events.append((time.perf_counter(), ev))
                        self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> EventListener:
        """Connect and wait for the first event (the current state)."""
        self._thread.start()
        self.wait_for(lambda ev: True, timeout)
        return self

    def wait_for(self, pred: Any, timeout: float, after: int = 0) -> tuple[float, dict[str, Any]]:
        """Wait for the first event at index >= ``after`` satisfying ``pred``; return it.

        Events stay ``dict[str, Any]``: they are the stream's JSON, of any service and type.

        Raises
        ------
        TimeoutError
            If no such event arrives within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, ev in self.events[after:]:
                    if pred(ev):
                        return t, ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("event not received in time")
                self._cond.wait(left)

    def stop(self) -> None:
        """Stop reading (the thread ends at the next event or keep-alive)."""
        self._stop.set()


def _post(client: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(url, json=body)
    if r.status_code >= 400:
        d = r.json()
        raise ConfigError(str(d.get("message", d)), field=d.get("field"))
    out: dict[str, Any] = r.json()
    return out


def run_tour(
    url: str,
    *,
    link: str = "M1-M2",
    fraction: float = 1.0,
    what_if_sets: dict[str, float] | None = None,
    policy: str | None = None,
    timeout: float = 60.0,
) -> TourResult:
    """Drive a running twin through the tour and measure it.

    Returns
    -------
    TourResult
        ``attack`` (the link view after injection), ``alarm`` (the alarm record),
        ``event_to_dashboard_ms`` (attack request sent -> alarm event received on the event
        stream), ``alarm_to_reroute_ms`` (measured inside the twin), ``what_if`` (prediction
        vs live), ``restore_ms`` (clear sent -> ``restored`` event received), ``state`` (links
        and network after the tour).
    """
    base = url.rstrip("/")
    sets = what_if_sets if what_if_sets is not None else {"V": 4.0, "C": 400.0}
    listener = EventListener(base).start()
    try:
        with httpx.Client(timeout=timeout) as client:
            lid = client.get(f"{base}/api/links/{link}")
            if lid.status_code >= 400:
                d = lid.json()
                raise ConfigError(str(d.get("message", d)), field=d.get("field"))
            link_id = lid.json()["id"]
            mark = len(listener.events)
            t0 = time.perf_counter()
            attack = _post(
                client,
                f"{base}/api/links/{link_id}/attack",
                {"type": "intercept-resend", "fraction": fraction},
            )
            t_alarm, ev = listener.wait_for(
                lambda e: e.get("type") == "alarm" and e["alarm"]["link"] == link_id,
                timeout,
                mark,
            )
            alarm = ev["alarm"]
            wi_body: dict[str, Any] = {"set": sets}
            if policy:
                wi_body["policy"] = policy
            wi = _post(client, f"{base}/api/what-if", wi_body)
            mark = len(listener.events)
            t1 = time.perf_counter()
            _post(client, f"{base}/api/links/{link_id}/clear", {})
            t_rest, _ = listener.wait_for(
                lambda e: (
                    e.get("type") == "restored"
                    and (e.get("alarm", {}).get("link") == link_id or e.get("link") == link_id)
                ),
                timeout,
                mark,
            )
            state = client.get(f"{base}/api/state").json()
    finally:
        listener.stop()
    return {
        "link": link_id,
        "attack": attack,
        "alarm": alarm,
        "event_to_dashboard_ms": (t_alarm - t0) * 1e3,
        "alarm_to_reroute_ms": alarm["reroute_ms"],
        "what_if": wi,
        "restore_ms": (t_rest - t1) * 1e3,
        "state": {"links": state["links"], "network": state["network"]},
    }
