"""Closed loop timing: from the twin's alarm to key delivery stopped at both KMEs.

Three KMEs on a line (``a - b - c``, real mutual-TLS servers, ``DevNetwork``); the twin's
:class:`qkdtwin.twin.actuate.Actuator` with real operator clients performs, per cycle, what it
does on an alarm on link ``a-b`` (disable at ``a`` and ``b`` with the effect read back from
``GET /kme/v1/links``, tell ``c`` to route around it, discard since the onset at both ends),
then what it does on recovery. The figure is, per cycle, the time from the plan (the alarm) to
the later of the two read-backs of ``enabled: false``. Twice: on idle KMEs, and while
``--clients`` SAE clients hammer ``enc_keys`` at ``a`` (``tests/kms/sae_load.py``, its own
process): the actuation runs on the KMEs' peer/operator thread pool, outside the SAE admission
control, so it must not queue behind the SAE traffic. Target: p99 < 2 s.

``python benchmarks/closed_loop.py [--cycles 50] [--clients 256] [--write BENCHMARKS.md]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from qkdtwin.kms.client import OperatorClient  # noqa: E402
from qkdtwin.kms.devnet import DevNetwork  # noqa: E402
from qkdtwin.twin.actuate import Actuator  # noqa: E402

KMES = ["a", "b", "c"]
SAES = {"sae-a": "a", "sae-b": "b", "sae-c": "c"}


def cycles(net: DevNetwork, n: int) -> dict[str, list[float]]:
    cert, key = net.pki.operators["twin"]
    act = Actuator(
        {k: (lambda k=k: OperatorClient(net.url(k), cert, key, net.pki.ca_cert)) for k in KMES},
        "on",
    )
    stop, restore, failures = [], [], 0
    try:
        for _ in range(n):
            plan = act.plan_alarm("a-b", "a", "b", time.time(), "benchmark")
            t0 = time.time()
            for a in plan:
                a.planned_at = t0
            act.perform(plan)
            failures += sum(1 for a in plan if a.error)
            stop.append(max(a.effect_at for a in plan if a.kind == "disable") - t0)
            back = act.plan_restore("a-b", "a", "b", time.time())
            t1 = time.time()
            act.perform(back)
            failures += sum(1 for a in back if a.error)
            restore.append(max(a.effect_at for a in back if a.kind == "enable") - t1)
    finally:
        act.close()
    return {"stop": stop, "restore": restore, "failures": [float(failures)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="closed-loop-"))
    t_all = time.perf_counter()
    net = DevNetwork(work, KMES, [("a", "b"), ("b", "c")], SAES, initial_keys=5000,
                     run_feeders=False).start()  # fmt: skip
    rows = []
    try:
        rows.append(("idle KMEs", cycles(net, args.cycles), None))
        cert, key = net.pki.saes["sae-a"]
        plan = {
            "groups": [{"port": int(net.url("a").rsplit(":", 1)[1]), "cert": str(cert),
                        "key": str(key), "slave": "sae-b", "clients": args.clients,
                        "number": 2}],
            "ca": str(net.pki.ca_cert), "duration_s": 1e6, "timeout_min_s": 0.5,
            "timeout_max_s": 3.0, "seed": 1,
        }  # fmt: skip
        (work / "plan.json").write_text(json.dumps(plan))
        load = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "kms" / "sae_load.py"),
             str(work / "plan.json"), str(work / "out.json")],
        )  # fmt: skip
        try:
            time.sleep(3.0)  # the load is up
            rows.append((f"{args.clients} SAE clients hammering kme a", cycles(net, args.cycles),
                         args.clients))  # fmt: skip
        finally:
            load.kill()
            load.wait()
    finally:
        net.stop()
    total = time.perf_counter() - t_all
    lines = [
        "| condition | cycles | stop: median (s) | stop: p99 (s) | stop: max (s) | "
        "re-enable: median (s) | failed actions | p99 < 2 s |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|",
    ]
    for name, r, _c in rows:
        s = np.array(r["stop"])
        e = np.array(r["restore"])
        p99 = float(np.percentile(s, 99))
        lines.append(
            f"| {name} | {len(s)} | {np.median(s):.3f} | {p99:.3f} | {s.max():.3f} | "
            f"{np.median(e):.3f} | {int(r['failures'][0])} | {'yes' if p99 < 2 else 'NO'} |"
        )
    exe = Path(sys.executable)
    py = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else "python"
    md = f"""## Closed loop: alarm to key delivery stopped (`benchmarks/closed_loop.py`)

`{py} benchmarks/closed_loop.py {" ".join(sys.argv[1:])}`; {platform.processor() or "CPU"},
{os.cpu_count()} cores (shared), Python {platform.python_version()};
{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; {total:.0f} s.

Three KMEs on a line (a - b - c, mutual TLS, one process); per cycle the twin's actuator does
what an alarm on a-b makes it do (disable at a and b and read `enabled: false` back, tell c to
route around a-b, discard since the onset at both ends), then the recovery (discard, enable,
allow). *Stop* = from the alarm to the later of the two read-backs; each cycle opens its
operator connections once (kept alive). The loaded rows run while the SAE clients of
`tests/kms/sae_load.py` (its own process, timeouts 0.5-3 s) hammer `enc_keys` at a: the
actuation is served on the KMEs' peer/operator thread pool, outside the SAE admission control.

{chr(10).join(lines)}
"""
    print(md)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _report import write_section

        write_section(args.write, "closed-loop", md)


if __name__ == "__main__":
    main()
