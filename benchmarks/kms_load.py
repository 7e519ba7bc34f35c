"""KMS load benchmark: ETSI 014 ``enc_keys`` over real mutual TLS against ``qkdtwin kms serve``.

For each store (SQLite, PostgreSQL), batch size (1, 100 keys of 256 bits) and number of
concurrent SAEs, a KME subprocess is pre-filled with keys and a *separate* load-generator
subprocess (this script with ``--client``) runs one asyncio/httpx client per SAE, each with its
own client certificate, calling ``POST enc_keys`` for a fixed duration. Two load shapes:

* **closed loop** (saturation): each SAE sends its next request as soon as the last returned;
  gives the throughput ceiling, and latencies that grow with the number of SAEs (Little's law).
* **open loop** (``--open-rate``, keys/s offered in total): each SAE sends on a fixed
  schedule, and a request's latency is measured from its *scheduled* send time, so a server
  that falls behind is charged for the queueing it causes (no coordinated omission). This is
  the latency an SLO at a given load means.

Reported: delivered keys per second, and request latency p50/p99. Rewrites the ``kms``
section of BENCHMARKS.md with ``--write``.

Usage::

    python benchmarks/kms_load.py [--write BENCHMARKS.md] [--duration 3] [--saes 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import write_section  # noqa: E402

PG_URL = os.environ.get("QKDTWIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SLAVE = "sae-slave"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _client_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load: one httpx.AsyncClient per SAE, back-to-back requests for ``duration``."""
    import httpx

    lat: list[float] = []
    keys = 0
    errors = 0
    stop_at = 0.0
    t0 = 0.0
    rate = float(spec.get("rate") or 0.0)

    async def one(sae: str) -> None:
        nonlocal keys, errors
        ctx = ssl.create_default_context(cafile=spec["ca"])
        ctx.load_cert_chain(f"{spec['pki']}/{sae}.pem", f"{spec['pki']}/{sae}.key")
        body = {"number": spec["batch"], "size": 256}
        path = f"/api/v1/keys/{SLAVE}/enc_keys"
        async with httpx.AsyncClient(base_url=spec["url"], verify=ctx, timeout=30.0) as c:
            await c.post(path, json=body)  # warm-up: handshake and first request
            await start.wait()
            interval = len(spec["saes"]) * spec["batch"] / rate if rate else 0.0
            due = t0 + interval * spec["saes"].index(sae) / len(spec["saes"])
            while time.perf_counter() < stop_at:
                if rate:  # open loop: wait for the slot, measure from the slot
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    t = due
                    due += interval
                else:
                    t = time.perf_counter()
                r = await c.post(path, json=body)
                dt = time.perf_counter() - t
                if r.status_code == 200:
                    lat.append(dt)
                    keys += len(r.json()["keys"])
                else:
                    errors += 1

    start = asyncio.Event()
    tasks = [asyncio.create_task(one(s)) for s in spec["saes"]]
    await asyncio.sleep(0.5 + 0.02 * len(tasks))  # let every client finish its warm-up
    t0 = time.perf_counter()
    stop_at = t0 + spec["duration"]
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")

    return {
        "keys_per_s": keys / elapsed,
        "requests": len(lat),
        "errors": errors,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def _wait_ready(url: str, pki: Path, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "sae-0.pem"), str(pki / "sae-0.key"))
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=url, verify=ctx, timeout=2.0) as c:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if c.get(f"/api/v1/keys/{SLAVE}/status").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
    raise RuntimeError("KME did not become ready")


def _topup(db: str, n: int) -> None:
    from qkdtwin.kms import KeyStore

    store = KeyStore(db, max_key_count=n)
    try:
        missing = n - store.available_count()
        if missing > 0:
            store.add_keys((str(uuid.uuid4()), os.urandom(32)) for _ in range(missing))
    finally:
        store.close()


def run_store(
    name: str,
    db: str,
    tmp: Path,
    pki: Path,
    loads: list[tuple[int, int, float]],
    duration: float,
    open_duration: float,
) -> list[dict[str, Any]]:
    """Run each ``(batch, SAEs, offered keys/s or 0 for closed loop)`` load against one KME."""
    saes = [n for _, n, _ in loads]
    port = _free_port()
    all_saes = [f"sae-{i}" for i in range(max(saes))]
    cfg = tmp / f"kme-{name}.yaml"
    saes_map = dict.fromkeys([*all_saes, SLAVE], "kme-a")
    cfg.write_text(
        json.dumps(
            {
                "port": port,
                "db": db,
                "cert": str(pki / "kme-a.pem"),
                "key": str(pki / "kme-a.key"),
                "ca": str(pki / "ca.pem"),
                "kme": {"kme_id": "kme-a", "saes": saes_map, "max_key_per_request": 128},
            }
        )
    )
    fill = max(100_000, int(max(duration, open_duration) * 15_000))  # never run dry
    _topup(db, fill)
    url = f"https://127.0.0.1:{port}"
    rows = []
    with subprocess.Popen(
        [sys.executable, "-m", "qkdtwin", "kms", "serve", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            _wait_ready(url, pki, proc)
            for batch, n, rate in loads:
                _topup(db, fill)
                spec = {
                    "url": url,
                    "ca": str(pki / "ca.pem"),
                    "pki": str(pki),
                    "saes": all_saes[:n],
                    "batch": batch,
                    "duration": open_duration if rate else duration,
                    "rate": rate,
                }
                out = subprocess.run(
                    [sys.executable, __file__, "--client", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=120,
                )
                res = json.loads(out.stdout.strip().splitlines()[-1])
                res.update(store=name, batch=batch, saes=n, rate=rate)
                print(json.dumps(res), flush=True)
                rows.append(res)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--saes", default="1,16,64")
    ap.add_argument("--batches", default="1,100")
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument(
        "--open-rate",
        type=float,
        default=5000.0,
        help="offered keys/s of the open-loop runs (batches of 100; 0: none)",
    )
    ap.add_argument("--open-saes", default="1,16,64")
    ap.add_argument(
        "--open-duration",
        type=float,
        default=15.0,
        help="seconds of each open-loop run (a p99 needs several hundred requests)",
    )
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client is not None:
        print(json.dumps(asyncio.run(_client_main(json.loads(args.client)))))
        return

    import sqlalchemy as sa

    from qkdtwin.kms.tls import init_pki

    saes = [int(x) for x in args.saes.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    loads = [(b, n, 0.0) for b in batches for n in saes]
    if args.open_rate > 0:
        loads += [(100, int(n), args.open_rate) for n in args.open_saes.split(",")]
    saes = [n for _, n, _ in loads]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pki = tmp / "pki"
        init_pki(pki, kme_ids=["kme-a"], sae_ids=[*(f"sae-{i}" for i in range(max(saes))), SLAVE])
        for store in args.stores.split(","):
            if store == "sqlite":
                rows += run_store(
                    store,
                    f"sqlite:///{tmp / 'kme.db'}",
                    tmp,
                    pki,
                    loads,
                    args.duration,
                    args.open_duration,
                )
            else:
                schema = f"kms_bench_{uuid.uuid4().hex[:12]}"
                admin = sa.create_engine(PG_URL)
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
                try:
                    db = f"{PG_URL}?options=-csearch_path%3D{schema}"
                    rows += run_store(store, db, tmp, pki, loads, args.duration, args.open_duration)
                finally:
                    with admin.begin() as conn:
                        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                    admin.dispose()

    lines = [
        "## KMS load (`benchmarks/kms_load.py`)",
        "",
        f"ETSI 014 `POST enc_keys` for 256-bit keys over mutual TLS (HTTP/1.1, one connection "
        f"per SAE, each SAE its own client certificate) against one `qkdtwin kms serve` process "
        f"(one uvicorn worker); the load comes from a separate process (asyncio + httpx, one "
        f"client per SAE, {args.duration:g} s after a warm-up). Store topped up to "
        f"max(100,000, 15,000 x run seconds) keys before each run. {os.cpu_count()} CPU "
        "cores shared by server, load generator "
        f"and database; {platform.python_implementation()} {platform.python_version()}. "
        "Command: `python benchmarks/kms_load.py --write BENCHMARKS.md` (in `make bench`).",
        "",
        "**Closed loop** (each SAE sends its next request as soon as the last returned: "
        "the throughput ceiling):",
        "",
        "| Store | Batch | Concurrent SAEs | keys/s | p50 (ms) | p99 (ms) | requests | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    closed = [r for r in rows if not r["rate"]]
    opened = [r for r in rows if r["rate"]]
    lines.extend(
        f"| {r['store']} | {r['batch']} | {r['saes']} | {r['keys_per_s']:,.0f} | "
        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['requests']} | {r['errors']} |"
        for r in closed
    )
    if opened:
        lines += [
            "",
            f"**Open loop** at {args.open_rate:,.0f} keys/s offered in batches of 100 for "
            f"{args.open_duration:g} s, spread evenly over the SAEs; latency measured from "
            "each request's scheduled send time "
            "(no coordinated omission):",
            "",
            "| Store | Concurrent SAEs | offered keys/s | delivered keys/s | p50 (ms) | p99 (ms) "
            "| requests | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines.extend(
            f"| {r['store']} | {r['saes']} | {r['rate']:,.0f} | {r['keys_per_s']:,.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['requests']} | {r['errors']} |"
            for r in opened
        )

    def pick(rs: list[dict[str, Any]]) -> dict[str, Any] | None:
        hit = [r for r in rs if r["store"] == "sqlite" and r["batch"] == 100 and r["saes"] == 16]
        return hit[0] if hit else None

    t, o = pick(closed), pick(opened)
    if t is not None:
        rate_ok = t["keys_per_s"] >= 5000
        lines += [
            "",
            f"Targets (SQLite, batches of 100, 16 SAEs): >= 5,000 keys/s "
            f"**{'met' if rate_ok else 'not met'}** ({t['keys_per_s']:,.0f} keys/s closed "
            f"loop). p99 < 50 ms: closed loop **{'met' if t['p99_ms'] < 50 else 'not met'}** "
            f"(p99 {t['p99_ms']:.1f} ms)"
            + (
                f"; open loop at {o['rate']:,.0f} keys/s "
                f"**{'met' if o['p99_ms'] < 50 else 'not met'}** (p99 {o['p99_ms']:.1f} ms)"
                if o is not None
                else ""
            )
            + ". Closed-loop latency at saturation is queueing: 16 SAEs each waiting for the "
            "server means p50 ~ 16 x the service time of one request (Little's law); p99 < 50 ms "
            "there would need about 16 / 0.05 = 320 requests of 100 keys per second.",
        ]
    md = "\n".join(lines)
    print(md)
    if args.write is not None:
        write_section(args.write, "kms", md)


if __name__ == "__main__":
    main()
