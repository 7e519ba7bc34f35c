"""The attach tour: a plant in its own process, a twin attached to it, two attacks detected.

A harness over both sides, so it lives outside both packages: the twin never imports the
plant, and the plant knows nothing of the twin; this module starts the plant as a separate
process (``qkdtwin plant serve``) and talks to it over its control endpoint only.

``qkdtwin twin attach-demo`` (and ``make demo``) runs what a user would do in three terminals:

1. ``qkdtwin plant serve`` on the seed topology (a separate process; its control endpoint is
   the lab bench, used here only to inject events and, at the end, to print the truth next
   to the twin's estimates for the audience);
2. an attached twin (:class:`~qkdtwin.twin.attached_runner.AttachedRunner`) on the plant's
   attach file: MQTT telemetry, KME polling, estimation, detection;
3. once every link is calibrated, a photon-number-splitting attack on a long backbone link and
   a fibre tap on another, one after the other; the twin must raise an alarm for each from
   its statistics alone. The tour prints each alarm, its statistic and its delay, then every
   link's estimated loss with its 95 % interval beside the plant's truth.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from qkdtwin.errors import ConfigError
from qkdtwin.twin.attached_runner import AttachedRunner

__all__ = ["AttackOutcome", "TourResult", "default_plant_scenario", "run_attach_tour"]


def default_plant_scenario() -> Path:
    """Path of the packaged plant scenario: the seed topology with hidden link truth."""
    return Path(str(resources.files("qkdtwin.plant").joinpath("scenarios/seed.yaml")))


@dataclass
class AttackOutcome:
    """One injected attack and what the twin made of it."""

    link: str
    type: str
    fraction: float
    injected_at: float
    alarm_kind: str | None = None
    raised_at: float | None = None
    delay_s: float | None = None
    onset: float | None = None
    intervals: float | None = None
    #: closed loop (actuate on): seconds from the alarm to delivery stopped and read back at
    #: both KMEs, KMEs told to route around the link, keys discarded since the onset
    stop_s: float | None = None
    rerouted_kmes: int = 0
    discarded: int | None = None
    exposed_keys: int | None = None


@dataclass
class TourResult:
    """What the tour measured."""

    attacks: list[AttackOutcome] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    false_alarms: list[dict[str, Any]] = field(default_factory=list)
    calibration_wall_s: float = 0.0
    #: Devices whose readings the twin decrypted (the plant grants it an aggregator identity).
    readings_devices: int = 0
    readings_delivered: int = 0
    actuation: str = "off"
    forecast_warnings: int = 0
    what_if_success: float | None = None
    what_if_horizon_s: float | None = None
    url: str | None = None
    control_url: str | None = None


def _report_actions(
    twin: Any, alarm_id: int, out: AttackOutcome, timeout_s: float, log: Callable[[str], None]
) -> None:
    """Wait for the closed loop's actions on an alarm; record and print what they did."""
    deadline = time.monotonic() + min(timeout_s, 30.0)
    alarm = twin.alarms[alarm_id - 1]

    def acts() -> list[Any]:
        return [e.detail for e in alarm.events if e.what == "actuated"]

    others = len(twin.attach.kmes) - 2
    while len(acts()) < 4 + others and time.monotonic() < deadline:
        time.sleep(0.05)
    done = acts()
    stops = [d for d in done if d["action"] == "disable" and d["effect_at"] is not None]
    if stops:
        out.stop_s = max(d["effect_at"] - d["planned_at"] for d in stops)
    out.rerouted_kmes = sum(1 for d in done if d["action"] == "avoid" and not d["error"])
    disc = [d["answer"].get("discarded", 0) for d in done if d["action"] == "discard"]
    out.discarded = sum(disc) if disc else None
    out.exposed_keys = alarm.exposed_keys
    failed = [d for d in done if d["error"]]
    log(
        f"twin: disabled {out.link} at {len(stops)} KMEs (read back"
        + (f" {out.stop_s:.2f} s after the alarm" if out.stop_s is not None else "")
        + f"), {out.rerouted_kmes} KMEs route around it, {out.discarded} keys discarded since "
        f"the onset, {out.exposed_keys} delivered before the alarm"
        + (f"; {len(failed)} actions failed: {failed[0]['error']}" if failed else "")
    )


def _post(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = httpx.post(url, json=body or {}, timeout=30.0)
    r.raise_for_status()
    return dict(r.json())


def _expected_devices(scenario: Path) -> int:
    """IIoT devices the plant of ``scenario`` runs (devices per gateway x gateways)."""
    from qkdtwin.plant.scenario import load_plant_scenario

    sc = load_plant_scenario(scenario)
    return sc.plant.devices_per_gateway * len(sc.topology.nodes_with_role("edge_gateway"))


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise ConfigError(f"attach tour: timed out waiting for {what}", field="tour")
        time.sleep(0.1)


def run_attach_tour(
    *,
    scenario: Path | None = None,
    data_dir: Path,
    speed: float = 10.0,
    port: int = 0,
    attacks: tuple[tuple[str, str, float], ...] = (
        ("M1-M2", "pns", 0.5),
        ("M2-M3", "fiber-tap", 0.2),
    ),
    timeout_s: float = 120.0,
    actuate: str = "on",
    keep: Callable[[AttachedRunner, TourResult], None] | None = None,
    log: Callable[[str], None] = print,
) -> TourResult:
    """Run the tour; return the measured outcome (``keep``: called before shutdown).

    Raises
    ------
    ConfigError
        If the plant does not start or an expected alarm does not come within ``timeout_s``.
    """
    scenario = scenario or default_plant_scenario()
    cmd = [
        sys.executable, "-m", "qkdtwin", "plant", "serve", str(scenario), "--json",
        "--speed", f"{speed:g}", "--data-dir", str(data_dir / "plant"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = TourResult()
    runner: AttachedRunner | None = None
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise ConfigError(f"the plant did not start: {err.strip()[-300:]}", field="plant")
        info = json.loads(line)
        control = str(info["control_url"])
        result.control_url = control
        log(f"plant: {info['modules']} QKD modules, {len(info['kmes'])} KMEs, speed x{speed:g}")
        log(f"  attach file {info['attach_file']}")
        runner = AttachedRunner(info["attach_file"], port=port, actuate=actuate).start()
        result.actuation = actuate
        result.url = runner.url
        twin = runner.twin
        log(f"twin attached: dashboard at {runner.url}/")
        t0 = time.monotonic()
        _wait(
            lambda: all(
                lk.estimate.converged and lk.estimate.intervals >= 30 for lk in twin.state().links
            ),
            timeout_s,
            "every link's calibration",
        )
        result.calibration_wall_s = time.monotonic() - t0
        log(f"  every link calibrated after {result.calibration_wall_s:.1f} s (wall)")
        for link, kind, fraction in attacks:
            now = httpx.get(f"{control}/truth", timeout=30.0).json()
            truth_t, epoch = float(now["t"]), float(now["clock_epoch"])
            _post(f"{control}/links/{link}/attack", {"type": kind, "fraction": fraction})
            out = AttackOutcome(link, kind, fraction, injected_at=epoch + truth_t)
            log(f"plant: {kind} on {link}, fraction {fraction:g} (the twin is not told)")
            last_id = len(twin.alarms)

            def alarmed(link: str = link, last_id: int = last_id) -> bool:
                return any(a.link == link and a.id > last_id for a in twin.state().alarms)

            _wait(alarmed, timeout_s, f"an alarm on {link}")
            alarm = next(a for a in twin.state().alarms if a.link == link and a.id > last_id)
            out.alarm_kind, out.raised_at, out.onset = alarm.kind, alarm.raised_at, alarm.onset
            out.delay_s = alarm.raised_at - out.injected_at
            out.intervals = out.delay_s / runner.attach.reporting_interval_s
            result.attacks.append(out)
            log(
                f"twin: alarm on {link}: statistic {alarm.kind}, raised {out.delay_s:.0f} s "
                f"({out.intervals:.0f} intervals) after the attack began"
            )
            if actuate == "on":
                _report_actions(twin, alarm.id, out, timeout_s, log)
        window = runner.twin.window_s
        log(f"(waiting one estimation window, {window:g} s of plant time, for the estimates)")
        after = max((a.raised_at or 0.0) for a in result.attacks) + window + 1.0
        _wait(lambda: (twin.t or 0.0) >= after, timeout_s, "one estimation window")
        expected = _expected_devices(scenario)
        if expected and twin.state().readings.source == "decrypted":
            # a device's first reading can lag on a loaded machine: give every device the
            # chance to report before counting them (the count below says what was seen)
            with contextlib.suppress(ConfigError):
                _wait(
                    lambda: len(twin.state().readings.devices) >= expected,
                    min(timeout_s, 60.0),
                    "every device's readings",
                )
        truth = httpx.get(f"{control}/truth", timeout=30.0).json()
        true_loss = {lk["id"]: lk["loss_db"] for lk in truth["links"]}
        attacked = {a.link for a in result.attacks}
        st = twin.state()
        result.false_alarms = [
            {"link": a.link, "kind": a.kind} for a in st.alarms if a.link not in attacked
        ]
        log(
            "the truth column comes from the plant's control endpoint for this printout only; "
            "the twin never reads it. Under PNS the honest link model does not hold, so that "
            "link's loss estimate is biased; a tap is a real loss step, which the estimate follows."
        )
        log(f"{'link':<12} {'status':<10} {'estimated loss, dB [95 %]':<30} {'truth (plant)':>14}")
        for lk in st.links:
            e = lk.estimate
            ci = e.loss_db_ci or [float("nan"), float("nan")]
            est = "-" if e.loss_db is None else f"{e.loss_db:6.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
            tl = true_loss.get(lk.id)
            true_txt = "cut" if tl is None else f"{tl:.2f}"
            log(f"{lk.id:<12} {lk.status.value:<10} {est:<30} {true_txt:>14}")
            result.links.append(
                {
                    "id": lk.id,
                    "status": lk.status.value,
                    "loss_db": e.loss_db,
                    "loss_db_ci": e.loss_db_ci,
                    "true_loss_db": tl,
                }
            )
        warn = [
            (f"{k.node}->{lk.peer}", lk.forecast)
            for k in st.kmes
            for lk in k.links
            if lk.forecast is not None and lk.forecast.warning
        ]
        result.forecast_warnings = len(warn)
        log(
            f"key-supply forecast: {len(warn)} KME store(s) expected to run dry within "
            f"{twin.forecast_lead_s:g} s"
            + "".join(f"; {sid}: {f.level} keys, ~{f.ttd_s or 0:.0f} s" for sid, f in warn[:3])
        )
        wi = twin.what_if()
        result.what_if_success = wi["success_rate"]
        result.what_if_horizon_s = wi["params"]["duration"]
        log(
            f"what-if from the present (links in alarm removed, pools from the KMEs' keys now): "
            f"predicted service success {100 * (wi['success_rate'] or 0):.1f} % over the next "
            f"{wi['params']['duration']:g} s"
        )
        rd = st.readings
        result.readings_devices = len(rd.devices)
        result.readings_delivered = int(rd.counters.get("delivered", 0))
        if rd.source == "decrypted":
            log(
                f"twin as the aggregator ({rd.note.split(';')[0]}): {result.readings_delivered} "
                f"readings from {result.readings_devices} devices verified and decrypted"
            )
            for d in rd.devices[:2]:
                vals = ", ".join(f"{k} {v:.2f}" for k, v in d.values.items())
                log(f"  {d.id} ({d.kind}): {vals}")
        else:
            log(f"device readings: {rd.note}")
        if keep is not None:
            keep(runner, result)
    finally:
        if runner is not None:
            runner.stop()
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result
