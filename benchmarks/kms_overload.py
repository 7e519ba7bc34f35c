"""Independent overload harness: a KME pair under hundreds of impatient SAEs, then an audit.

What a key manager must never do, checked from the outside and from the store files:

1. ``qkdtwin kms dev-pair DIR --feed none --no-wrap --import-keys KEYS --json`` (a separate
   process): two KMEs holding exactly the imported keys, unwrapped so the files can be
   searched for key bytes.
2. ``tests/kms/sae_load.py`` (another process): ``--clients`` SAE clients per direction
   hammering ``enc_keys`` for ``--seconds`` with timeouts drawn in [0.5, 3] s, aborting the
   connection when they give up.
3. The slave SAE fetches every key a client received (``dec_keys``), then the harness waits
   for the retry window and the erasure sweep, stops the pair (SIGINT) and reads both stores.

Per key (of the master's KME store, from its audit log and state): *received* (in exactly one
client's 200 response), *stranded* (delivered by the KME, audited ``enc`` and not ``undo``,
yet in no response: lost in flight), *available* (never left, or returned by an undo).
Unaccounted = keys received twice + keys received but not delivered by the audit + keys in
no category: must be 0; stranded must be <= 1 % of delivered. Then every store file (database,
WAL, shared memory) of both KMEs is searched for the material of every received key: none
may be left.

``python benchmarks/kms_overload.py [--clients 256] [--seconds 10] [--both] [--write F]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from qkdtwin.kms import KeyStore  # noqa: E402
from qkdtwin.kms.client import KmeClient  # noqa: E402


def start_pair(directory: Path, keys: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    cmd = [sys.executable, "-m", "qkdtwin", "kms", "dev-pair", str(directory), "--feed", "none",
           "--no-wrap", "--import-keys", str(keys), "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"dev-pair did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line)


def run_load(info: dict[str, Any], clients: int, seconds: float, both: bool, work: Path) -> dict:
    def group(sae: str, url: str, slave: str) -> dict[str, Any]:
        return {
            "port": int(url.rsplit(":", 1)[1]),
            "cert": info[sae.replace("-", "_")]["cert"],
            "key": info[sae.replace("-", "_")]["key"],
            "slave": slave,
            "clients": clients,
            "number": 2,
        }

    groups = [group("sae-a", info["kme_a_url"], "sae-b")]
    if both:
        groups.append(group("sae-b", info["kme_b_url"], "sae-a"))
    plan = {
        "groups": groups,
        "ca": info["ca_cert"],
        "duration_s": seconds,
        "timeout_min_s": 0.5,
        "timeout_max_s": 3.0,
        "seed": 1,
    }
    (work / "plan.json").write_text(json.dumps(plan))
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "kms" / "sae_load.py"), str(work / "plan.json"),
         str(work / "out.json")],
        check=True, timeout=seconds + 120,
    )  # fmt: skip
    return dict(json.loads((work / "out.json").read_text()))


def audit(store: KeyStore, received: dict[str, int]) -> dict[str, int]:
    """Classify every key of the master's store; see the module docstring."""
    actions: dict[str, list[str]] = {}
    for e in store.audit_log():
        actions.setdefault(e["key_id"], []).append(e["action"])
    with store.engine.connect() as conn:
        states = dict(conn.exec_driver_sql("SELECT key_id, state FROM kms_keys").all())
    delivered = {k for k, acts in actions.items() if acts.count("enc") > acts.count("undo")}
    # the same link pool also holds the peer's reservations, mirrored here (audited sync)
    mirrored = {
        k for k, acts in actions.items() if acts.count("sync") > acts.count("undo")
    } - delivered
    twice = sum(1 for n in received.values() if n > 1)
    not_delivered = sum(1 for k in received if k not in delivered)
    stranded = len(delivered - set(received))
    available = sum(1 for s in states.values() if s == "available")
    unplaced = len(states) - available - len(delivered) - len(mirrored)
    return {
        "keys": len(states),
        "delivered": len(delivered),
        "received": len(received),
        "stranded": stranded,
        "available": available,
        "mirrored_from_peer": len(mirrored),
        "unaccounted": twice + not_delivered + abs(unplaced),
        "received_twice": twice,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=256, help="SAE clients per direction")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--keys", type=int, default=20_000, help="keys imported into the pair")
    ap.add_argument("--both", action="store_true", help="load both directions at once")
    ap.add_argument("--settle-s", type=float, default=70.0, help="wait before stopping the pair, s")
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kms-overload-"))
    keys = work / "keys.txt"
    keys.write_text("".join(f"{uuid.uuid4()} {os.urandom(32).hex()}\n" for _ in range(args.keys)))
    pair_dir = work / "pair"
    t0 = time.perf_counter()
    proc, info = start_pair(pair_dir, keys)
    try:
        out = run_load(info, args.clients, args.seconds, args.both, work)
        reqs = out["requests"]
        received: dict[str, int] = {}
        material: dict[str, bytes] = {}
        by_group: dict[int, list[str]] = {}
        import base64

        for r in reqs:
            if r["outcome"] == "ok":
                for kid, b64 in r["keys"]:
                    received[kid] = received.get(kid, 0) + 1
                    material[kid] = base64.b64decode(b64)
                    by_group.setdefault(r["group"], []).append(kid)
        # the slaves fetch every key received (so the slave side can erase it too)
        ca = Path(info["ca_cert"])
        fetched = 0
        for g, ids in by_group.items():
            slave, master, url = (
                ("sae_b", "sae-a", info["kme_b_url"]) if g == 0 else ("sae_a", "sae-b",
                                                                       info["kme_a_url"])
            )  # fmt: skip
            with KmeClient(url, Path(info[slave]["cert"]), Path(info[slave]["key"]), ca) as c:
                for i in range(0, len(ids), 100):
                    fetched += len(c.get_keys_with_ids(master, ids[i : i + 100]))
        # the retry window (5 s), the sweep (1 s), and the periodic scrub (60 s) of the
        # running KMEs: the files are then searched with the pair stopped (--settle-s 8 leaves
        # it to the scrub at close)
        time.sleep(args.settle_s)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    outcomes: dict[str, int] = {}
    for r in reqs:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    rows = []
    for kme, group in (("kme-a", 0), ("kme-b", 1)):
        if group == 1 and not args.both:
            continue
        mine = {k: n for k, n in received.items() if k in set(by_group.get(group, []))}
        st = KeyStore(f"sqlite:///{pair_dir / f'{kme}.db'}", reserved_ttl_s=None)
        try:
            rows.append((kme, audit(st, mine)))
        finally:
            st.close()
    files = [p for p in pair_dir.iterdir() if p.is_file() and ".db" in p.name]
    blobs = [p.read_bytes() for p in files]
    left_keys = [
        (k, [f.name for f, b in zip(files, blobs, strict=True) if m in b])
        for k, m in material.items()
        if any(m in b for b in blobs)
    ]
    left = len(left_keys)
    for k, where in left_keys:
        print(f"key {k} still in {where}", file=sys.stderr)
    total = time.perf_counter() - t0
    ok_keys = sum(len(r["keys"]) for r in reqs if r["outcome"] == "ok")
    lines = [
        "| master KME | keys | delivered | received | stranded (share) | available | "
        "mirrored (peer's) | unaccounted | received twice |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kme, a in rows:
        share = a["stranded"] / a["delivered"] if a["delivered"] else 0.0
        lines.append(
            f"| {kme} | {a['keys']} | {a['delivered']} | {a['received']} | {a['stranded']} "
            f"({100 * share:.2f} %) | {a['available']} | {a['mirrored_from_peer']} | "
            f"**{a['unaccounted']}** | "
            f"{a['received_twice']} |"
        )
    exe = Path(sys.executable)
    py = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else "python"
    md = f"""## KMS under overload, audited (`benchmarks/kms_overload.py`)

`{py} benchmarks/kms_overload.py {" ".join(sys.argv[1:])}`; {platform.processor() or "CPU"},
{os.cpu_count()} cores (shared), Python {platform.python_version()};
{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; {total:.0f} s.

`kms dev-pair --feed none --no-wrap` with {args.keys} imported keys (a separate process), then
{args.clients} SAE clients per direction ({"both directions" if args.both else "kme-a to kme-b"})
for {args.seconds:g} s, 2 keys per request, timeouts uniform in [0.5, 3] s
(`tests/kms/sae_load.py`, its own process). Outcomes: {json.dumps(outcomes)}; goodput
{ok_keys / max(out["wall_s"], 1e-9):.0f} keys/s. The slaves then fetched all {fetched} received
keys; {args.settle_s:g} s later (retry window, sweep, the running KMEs' periodic scrub) the
pair was stopped and its stores audited.

{chr(10).join(lines)}

Store files searched after the stop ({", ".join(sorted(p.name for p in files))}): **{left}** of
{len(material)} received keys' bytes found.
"""
    print(md)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _report import write_section

        write_section(args.write, "kms-overload" + ("-both" if args.both else ""), md)
    bad = (
        any(a["unaccounted"] for _k, a in rows)
        or left
        or any(a["stranded"] > 0.01 * max(a["delivered"], 1) for _k, a in rows)
    )
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
