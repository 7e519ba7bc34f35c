"""Keys exposed per attack: delivered from an attacked link before the closed loop stopped it.

The live plant of ``examples/plant-seed.yaml`` (12 KMEs over mutual TLS, the IIoT gateways
drawing keys through ETSI 014, Mosquitto) runs at 10x speed; the attached twin runs with
``--actuate on``. Per cell (attack type, attacked fraction F), a fresh plant and twin: once
the twin has calibrated every link, link ``M1-M2`` is attacked and the harness records

* the **detection delay**: the alarm's ``raised_at`` minus the attack's start (network s);
* the **twin's** ``exposed_keys``: keys delivered from the link between its *estimated* onset
  and the alarm, from the KMEs' counters (what an operator sees);
* the **truth**: keys that left the link's pool (the larger of the two ends' delivered
  counters, as the twin counts) between the attack's *true* start and the alarm, read from the
  stores (the twin never reads them);
* **after the alarm**: keys delivered from the link between the alarm and 3 s later
  (network: 30 s), i.e. what the actuation's latency let through; 0 expected.

``python benchmarks/exposure.py [--cells all|quick] [--write BENCHMARKS.md]``. Needs Mosquitto
on 127.0.0.1:1883 (``make services``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402
from qkdtwin.errors import QkdTwinError  # noqa: E402
from qkdtwin.plant import Plant  # noqa: E402
from qkdtwin.twin.attached_runner import AttachedRunner  # noqa: E402

MOSQUITTO = "mqtt://127.0.0.1:1883"
LINK = "M1-M2"
SECTION = "exposure"
CELLS = {
    "all": [
        ("intercept-resend", 0.1),
        ("intercept-resend", 0.5),
        ("pns", 0.5),
        ("fiber-tap", 0.1),
        ("fiber-tap", 0.5),
        ("detector-blinding", 0.5),
        ("faked-state", 0.5),
    ],
    "quick": [("intercept-resend", 0.5), ("fiber-tap", 0.5)],
}


def _wait(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def _delivered(plant: Plant) -> int:
    """Keys that left M1-M2's pool: the larger end's delivered counter (ground truth)."""
    a, b = LINK.split("-")
    return max(
        plant.net.stores[a][b].counters().delivered_total,
        plant.net.stores[b][a].counters().delivered_total,
    )


#: The load on the attacked link: gateway GW2.1's SAE asks its KME for a key for the SCADA
#: SAE (behind M1, the aggregator) every LOAD_PERIOD_S wall seconds; the key is relayed
#: GW2.1 -> M2 -> M1, so each one consumes a key of M1-M2 (until the alarm reroutes it).
LOAD_PERIOD_S = 0.1


class _Load:
    """A background SAE drawing keys over the attacked link (errors counted, not raised)."""

    def __init__(self, plant: Plant) -> None:
        from qkdtwin.kms.client import KmeClient

        cert, key = plant.net.pki.saes["sae-GW2.1"]
        self.client = KmeClient(plant.net.url("GW2.1"), cert, key, plant.net.pki.ca_cert)
        self.stop_event = threading.Event()
        self.got = self.failed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(LOAD_PERIOD_S):
            try:
                self.client.get_keys("sae-scada", number=1)
                self.got += 1
            except QkdTwinError:
                self.failed += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.client.close()


def run_cell(attack: str, fraction: float, work: Path) -> dict[str, Any]:
    plant = Plant(
        "examples/plant-seed.yaml", work / "plant", broker=MOSQUITTO, speed=10.0, seed=11
    ).start()
    runner = None
    load: _Load | None = None
    try:
        runner = AttachedRunner(plant.attach_file, serve=False, actuate="on").start()
        twin = runner.twin
        _wait(
            lambda: all(
                lk.estimate.converged and lk.estimate.intervals >= 30 for lk in twin.state().links
            ),
            120,
            "calibration",
        )
        load = _Load(plant)
        # the link's consumption before the attack (truth), over 20 network s
        c0, w0 = _delivered(plant), time.monotonic()
        time.sleep(2.0)
        consumption = (_delivered(plant) - c0) / ((time.monotonic() - w0) * plant.speed)
        truth = plant.truth()
        t_attack = truth.clock_epoch + truth.t  # the twin's network time
        base = _delivered(plant)
        wall0 = time.monotonic()
        plant.attack(LINK, attack, fraction)
        try:
            _wait(lambda: any(a.link == LINK for a in twin.alarms), 150, "alarm")
        except TimeoutError:
            return {
                "attack": attack,
                "fraction": fraction,
                "consumption": consumption,
                "detected": False,
                "waited_s": (time.monotonic() - wall0) * plant.speed,
                "truth_keys": _delivered(plant) - base,
            }
        alarm = next(a for a in twin.alarms if a.link == LINK)
        at_alarm = _delivered(plant)

        def disabled() -> list[dict[str, Any]]:
            return [
                e.detail
                for e in alarm.events
                if e.what == "actuated" and e.detail["action"] == "disable"
            ]

        _wait(lambda: len(disabled()) >= 2, 10, "disable at both ends")
        stop_s = max(d["effect_at"] for d in disabled()) - min(d["planned_at"] for d in disabled())
        time.sleep(3.0)
        after = _delivered(plant) - at_alarm
        return {
            "attack": attack,
            "fraction": fraction,
            "consumption": consumption,
            "detected": True,
            "statistic": alarm.kind,
            "delay_s": alarm.raised_at - t_attack,
            "onset_error_s": (alarm.onset - t_attack) if alarm.onset is not None else None,
            "twin_keys": alarm.exposed_keys,
            "truth_keys": at_alarm - base,
            "after_keys": after,
            "stop_s": stop_s,
        }
    finally:
        if load is not None:
            load.stop()
        if runner is not None:
            runner.stop()
        plant.stop()


def _fmt(x: Any, spec: str = "g") -> str:
    return "-" if x is None else format(x, spec)


def report(rows: list[dict[str, Any]], took_s: float, cmd: str) -> str:
    lines = [
        "## Keys exposed per attack (`benchmarks/exposure.py`)",
        "",
        f"`{cmd}`; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f"; took {took_s / 60:.1f} min.",
        "",
        "The live plant of `examples/plant-seed.yaml` (12 KMEs, mutual TLS, IIoT gateways "
        "drawing keys, Mosquitto) at 10x speed, seed 11, the attached twin with `--actuate on`; "
        f"a load on the link: gateway GW2.1's SAE draws one key every {LOAD_PERIOD_S:g} wall "
        "s for the SCADA SAE behind M1 (relayed GW2.1-M2-M1, so through the attacked link "
        "until the alarm reroutes it; the plant's own IIoT traffic barely uses M1-M2); "
        f"one fresh plant and twin per row; `{LINK}` attacked once every link is calibrated. "
        "*delay*: alarm (`raised_at`) minus the attack's start, network s. *twin*: the alarm's "
        "`exposed_keys` (keys delivered from the link between the twin's estimated onset and "
        "the alarm, from the KMEs' counters). *truth*: keys that left the link's pool between "
        "the true start and the alarm (the larger end's `delivered_total`, read from the "
        "stores by the harness). *after*: keys delivered from the link in the 3 s (30 network "
        "s) after the alarm. *stop*: alarm to `enabled: false` read back at both KMEs, wall s. "
        "*consumption*: keys/s leaving the link's pool before the attack (truth, over 20 "
        "network s). *onset error*: the twin's estimated onset minus the true start (network "
        "s; negative: early).",
        "",
        "| attack | F | consumption (keys/s) | detected by | delay (network s) | onset error "
        "(s) | twin exposed_keys | truth | delay x consumption | after the alarm | stop (s) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r["detected"]:
            lines.append(
                f"| {r['attack']} | {r['fraction']:g} | {r['consumption']:.2f} | not within "
                f"{r['waited_s']:.0f} s | - | - | - | {r['truth_keys']} | - | - | - |"
            )
            continue
        lines.append(
            f"| {r['attack']} | {r['fraction']:g} | {r['consumption']:.2f} | {r['statistic']} "
            f"| {r['delay_s']:.1f} | {_fmt(r['onset_error_s'], '.1f')} | {_fmt(r['twin_keys'])} "
            f"| {r['truth_keys']} | {r['delay_s'] * r['consumption']:.1f} | {r['after_keys']} "
            f"| {r['stop_s']:.2f} |"
        )
    lines += [
        "",
        "The twin's figure is an upper bound by construction: it takes the KMEs' counters at "
        "their last poll before its estimated onset (polls every few network seconds), and an "
        "onset estimated early widens the window further. Exposure is the detection delay "
        "times the link's key consumption: the twin cannot "
        "know which of the keys delivered since the onset came from the attacked distillation "
        "(a pool also holds older keys), so it reports all of them; the discard at both ends "
        "(docs/plant.md) erases the ones still in the pools.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", choices=sorted(CELLS), default="all")
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for i, (attack, fraction) in enumerate(CELLS[args.cells]):
            row = run_cell(attack, fraction, Path(d) / str(i))
            print(json.dumps(row), flush=True)
            rows.append(row)
    cmd = "python benchmarks/exposure.py" + (
        f" --cells {args.cells}" if args.cells != "all" else ""
    )
    md = report(rows, time.time() - started, cmd + " --write BENCHMARKS.md")
    print(md)
    if args.write is not None:
        write_section(args.write, SECTION, md)


if __name__ == "__main__":
    main()
