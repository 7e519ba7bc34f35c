"""KMS round-trip benchmark: ``enc_keys`` at kme-a, mirrored at kme-b, ``dec_keys`` at kme-b.

A KME pair as ``qkdtwin kms dev-pair`` runs it (:class:`~qkdtwin.kms.devnet.DevNetwork`: both
KMEs in this process, each its own uvicorn server on loopback with mutual TLS, the
reservation mirrored by ``POST /kme/v1/reservations`` over mutual TLS too), feeders off and
the link's pool imported up front so that key supply is never the bottleneck. A fresh pair
(fresh PKI, fresh stores: SQLite files or PostgreSQL schemas) serves each row.

The load comes from a *separate* process (this script with ``--client``): one asyncio client
per SAE pair, SAE pair ``i`` being master ``sae-a<i>`` behind kme-a and slave ``sae-b<i>``
behind kme-b, each with its own client certificate and one keep-alive HTTP/1.1 connection
to its KME (a minimal HTTP/1.1 client on asyncio TLS streams, so that the load generator
stays cheap next to the servers). One **round trip**: the master's ``POST enc_keys``
(number ``batch``, 256-bit keys), then the slave's ``POST dec_keys`` with the key_IDs; the
slave's keys are compared with the master's (a mismatch counts as an error). Load shapes:

* **closed loop**: each SAE pair starts its next round trip when the last one returned;
* **open loop** (``enc`` only): each master sends ``enc_keys`` on a fixed schedule (the
  offered rate spread evenly over the SAEs) and a request's latency is measured from its
  *scheduled* send time (no coordinated omission).

Reported per row: keys/s delivered to both ends (closed loop) or to the master (open loop),
latency p50/p99 of a round trip (closed) or of ``enc_keys`` (open), and where the machine's
CPU went during the measured window (the KME process, the load generator, PostgreSQL, and
everything else: other work sharing the machine). ``--profile`` samples the KME process with
py-spy during the SQLite single-key 16-SAE row and reports where its interpreter time goes.

Usage::

    python benchmarks/kms_roundtrip.py [--write BENCHMARKS.md] [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import write_section  # noqa: E402

PG_URL = os.environ.get("QKDTWIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SIZE_BITS = 256
SECTION = "kms-roundtrip"


# -- load generator (subprocess) -------------------------------------------------------------


#: The KMEs close a keep-alive connection idle for 5 s (tls.KEEP_ALIVE_TIMEOUT_S); the client
#: opens a fresh one after this long, so that it never sends into a connection being closed.
_IDLE_S = 4.0
#: A connection lost under a request (counted as an error, then reopened).
_LOST = (OSError, ssl.SSLError, asyncio.IncompleteReadError, EOFError)


class _Http:
    """One keep-alive HTTP/1.1 connection over TLS; JSON in, JSON out (Content-Length only)."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port, self.ctx = port, ctx
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if self.w is not None and time.perf_counter() - self.used > _IDLE_S:
            await self.close()
        if self.r is None or self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ctx)
        try:
            return await self._post(self.r, self.w, path, body)
        except BaseException:
            await self.close()
            raise
        finally:
            self.used = time.perf_counter()

    @staticmethod
    async def _post(
        r: asyncio.StreamReader, w: asyncio.StreamWriter, path: str, body: dict[str, Any]
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        w.write(
            b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
        )
        head = await r.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by this client")
        payload = await r.readexactly(length) if length else b""
        return status, (json.loads(payload) if payload else None)

    async def close(self) -> None:
        w, self.r, self.w = self.w, None, None
        if w is not None:
            w.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await w.wait_closed()


def _ctx(pki: Path, sae: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / f"{sae}.pem"), str(pki / f"{sae}.key"))
    return ctx


async def _client_main(spec: dict[str, Any]) -> dict[str, Any]:
    pki = Path(spec["pki"])
    batch, n, rate = int(spec["batch"]), int(spec["saes"]), float(spec["rate"])
    roundtrip = spec["mode"] == "roundtrip"
    lat: list[float] = []
    when: list[float] = []  # each request's (scheduled) start, s after t0
    keys = errors = 0
    why: Counter[str] = Counter()  # errors by kind: "enc 503", "dec 400", "lost", ...
    t0 = stop_at = 0.0
    start = asyncio.Event()
    warm = asyncio.Semaphore(0)

    async def one(i: int) -> None:
        nonlocal keys, errors
        master, slave = f"sae-a{i}", f"sae-b{i}"
        a = _Http(spec["port_a"], _ctx(pki, master))
        b = _Http(spec["port_b"], _ctx(pki, slave)) if roundtrip else None
        enc_path = f"/api/v1/keys/{slave}/enc_keys"
        dec_path = f"/api/v1/keys/{master}/dec_keys"
        enc_body = {"number": batch, "size": SIZE_BITS}

        async def trip() -> int:
            status, got = await a.post(enc_path, enc_body)
            if status != 200:
                why[f"enc_keys {status}"] += 1
                return 0
            if b is None:
                return len(got["keys"])
            ids = [{"key_ID": k["key_ID"]} for k in got["keys"]]
            status, dec = await b.post(dec_path, {"key_IDs": ids})
            if status != 200:
                why[f"dec_keys {status}"] += 1
                return 0
            if [k["key"] for k in dec["keys"]] != [k["key"] for k in got["keys"]]:
                why["keys differ"] += 1
                return 0
            return len(dec["keys"])

        try:
            await trip()  # warm-up: handshakes, first request of each connection
            warm.release()
            await start.wait()
            interval = n * batch / rate if rate else 0.0
            due = t0 + interval * i / n
            while True:
                if rate:  # open loop: wait for the slot, measure from the slot
                    if due >= stop_at:
                        break
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    t, due = due, due + interval
                else:
                    t = time.perf_counter()
                    if t >= stop_at:
                        break
                try:
                    got = await trip()
                except _LOST:
                    why["connection lost"] += 1
                    got = 0
                if got:
                    lat.append(time.perf_counter() - t)
                    when.append(t - t0)
                    keys += got
                else:
                    errors += 1
        finally:
            await a.close()
            if b is not None:
                await b.close()

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    for _ in range(n):
        await warm.acquire()
    print("GO", flush=True)  # the parent starts its CPU accounting here
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + float(spec["duration"])
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print("END", flush=True)
    # the slowest 1 %, with when they started: clustered = a stall, spread = queueing
    slowest = sorted(zip(lat, when, strict=True), reverse=True)[: max(1, len(lat) // 100)]
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")

    return {
        "keys_per_s": keys / elapsed,
        "requests": len(lat),
        "errors": errors,
        "error_kinds": dict(why),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "elapsed_s": elapsed,
        "client_cpu_s": cpu,
        "slowest": [[round(w, 3), round(x * 1e3, 1)] for x, w in slowest],
        "t0_monotonic": t0,  # time.perf_counter is CLOCK_MONOTONIC: comparable across processes
    }


# -- CPU accounting ------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores, /proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def _postgres_cpu() -> dict[int, int]:
    """CPU ticks used so far by each process named ``postgres`` (the database server)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        if comm.startswith("postgres"):
            rest = stat[stat.rfind(")") + 2 :].split()
            out[int(proc.name)] = int(rest[11]) + int(rest[12])  # utime, stime
    return out


def _postgres_cpu_s(since: dict[int, int]) -> float:
    """CPU seconds PostgreSQL used since ``since`` (processes that exited meanwhile: lost)."""
    return sum(t - since.get(pid, 0) for pid, t in _postgres_cpu().items()) / _TICK


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- one row: a fresh KME pair and a client run ---------------------------------------------


def _pg_schemas(prefix: str) -> dict[tuple[str, str], str]:
    names = [
        (kme, name)
        for kme, peer in (("kme-a", "kme-b"), ("kme-b", "kme-a"))
        for name in (peer, "relayed", "local")
    ]
    return {k: f"{prefix}_{k[0][-1]}_{k[1].replace('-', '_')}" for k in names}


#: How the two KMEs run: ``one`` process (``DevNetwork``, as ``kms dev-pair``) or ``two``
#: processes (one ``qkdtwin kms serve`` per KME, as a deployment runs them).
TOPOLOGIES = ("one", "two")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _TICK


class _InProcessPair:
    """Both KMEs in this process (:class:`~qkdtwin.kms.devnet.DevNetwork`)."""

    def __init__(self, row_dir: Path, sae_ids: dict[str, str], store_url: Any) -> None:
        from qkdtwin.kms.devnet import DevNetwork

        self.net = DevNetwork(
            row_dir,
            ["kme-a", "kme-b"],
            [("kme-a", "kme-b")],
            sae_ids,
            store_url=store_url,
            initial_keys=0,
            run_feeders=False,
        )
        self.pki_dir = self.net.directory

    def start(self, imported: list[tuple[str, bytes]]) -> dict[str, int]:
        from qkdtwin.ops import freeze_startup_objects

        self.net.start()
        # The pool of the link, owned by kme-a (the masters' end), in both stores: what
        # `kms import-keys` does at each end of a link.
        for a, b in (("kme-a", "kme-b"), ("kme-b", "kme-a")):
            self.net.stores[a][b].add_keys(imported, owner="kme-a")
        freeze_startup_objects()  # as `kms dev-pair` does once its KMEs serve
        return {k: self.net.servers[k].port for k in ("kme-a", "kme-b")}

    def cpu_s(self) -> float:
        return _self_cpu_s()

    def stop(self) -> None:
        self.net.stop()
        gc.unfreeze()  # the next row's pair is frozen afresh; this one's objects may go


class _TwoProcessPair:
    """Each KME its own ``qkdtwin kms serve`` process, configured as docs/kms.md shows."""

    def __init__(self, row_dir: Path, sae_ids: dict[str, str], store_url: Any) -> None:
        from qkdtwin.kms.tls import init_pki

        self.row_dir = row_dir
        self.pki = init_pki(row_dir / "pki", kme_ids=["kme-a", "kme-b"], sae_ids=list(sae_ids))
        self.pki_dir = row_dir / "pki"
        self.sae_ids = sae_ids
        self.url = store_url or (lambda kme, name: f"sqlite:///{row_dir / f'{kme}-{name}.db'}")
        self.procs: list[subprocess.Popen[str]] = []

    def _config(self, kme: str, ports: dict[str, int]) -> Path:
        peer = "kme-b" if kme == "kme-a" else "kme-a"
        cert, key = self.pki.kmes[kme]
        cfg = {
            "host": "127.0.0.1",
            "port": ports[kme],
            "db": self.url(kme, "local"),
            "cert": str(cert),
            "key": str(key),
            "ca": str(self.pki.ca_cert),
            "kek_file": str(self.pki.kek),
            "kme": {"kme_id": kme, "saes": self.sae_ids},
            "network": {
                "kmes": {k: f"https://127.0.0.1:{p}" for k, p in ports.items()},
                "links": [["kme-a", "kme-b"]],
            },
            "link_dbs": {peer: self.url(kme, peer)},
            "relayed_db": self.url(kme, "relayed"),
        }
        path = self.row_dir / f"{kme}.yaml"
        path.write_text(json.dumps(cfg))  # JSON is YAML
        return path

    def start(self, imported: list[tuple[str, bytes]]) -> dict[str, int]:
        from qkdtwin.kms.kek import load_kek
        from qkdtwin.kms.store import KeyStore

        assert self.pki.kek is not None
        kek = load_kek(self.pki.kek)
        for a, b in (("kme-a", "kme-b"), ("kme-b", "kme-a")):  # `kms import-keys` at each end
            url = self.url(a, b)
            epochs = None if url.startswith("sqlite") else self.pki_dir / "epochs"
            st = KeyStore(url, kek=kek, epoch_dir=epochs)
            try:
                st.add_keys(imported, owner="kme-a")
            finally:
                st.close()
        ports = {"kme-a": _free_port(), "kme-b": _free_port()}
        for kme in ports:
            cmd = [sys.executable, "-m", "qkdtwin", "kms", "serve", "--json"]
            proc = subprocess.Popen(
                [*cmd, "--config", str(self._config(kme, ports))],
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("{"):
                raise RuntimeError(f"kms serve for {kme} failed to start: {line!r}")
        return ports

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu_s(self) -> float:
        return sum(_proc_cpu_s(p) for p in self.pids)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_row(
    store: str,
    mode: str,
    batch: int,
    saes: int,
    rate: float,
    duration: float,
    pool: int,
    tmp: Path,
    profile: Path | None = None,
    topology: str = "one",
) -> dict[str, Any]:
    """Start a fresh KME pair, import ``pool`` keys, run one client load; return its row."""
    import sqlalchemy as sa

    row_dir = Path(tempfile.mkdtemp(dir=tmp))
    sae_ids = {f"sae-a{i}": "kme-a" for i in range(saes)}
    sae_ids.update({f"sae-b{i}": "kme-b" for i in range(saes)})
    admin = None
    schemas: dict[tuple[str, str], str] = {}
    store_url = None
    if store == "postgresql":
        schemas = _pg_schemas(f"kms_rt_{uuid.uuid4().hex[:10]}")
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:
            for schema in schemas.values():
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")

        def store_url(kme: str, name: str) -> str:
            return f"{PG_URL}?options=-csearch_path%3D{schemas[kme, name]}"

    pair = (_InProcessPair if topology == "one" else _TwoProcessPair)(row_dir, sae_ids, store_url)
    try:
        imported = [(str(uuid.uuid4()), os.urandom(SIZE_BITS // 8)) for _ in range(pool)]
        ports = pair.start(imported)
        spec = {
            "pki": str(pair.pki_dir),
            "port_a": ports["kme-a"],
            "port_b": ports["kme-b"],
            "mode": mode,
            "batch": batch,
            "saes": saes,
            "rate": rate,
            "duration": duration,
        }
        with subprocess.Popen(
            [sys.executable, __file__, "--client", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            spy = None
            line = proc.stdout.readline()
            if line.strip() != "GO":
                raise RuntimeError(f"load generator failed to start: {line!r}")
            t0 = time.perf_counter()
            busy0, pg0, kmes0 = _machine_busy_s(), _postgres_cpu(), pair.cpu_s()
            self0 = _self_cpu_s() if topology == "two" else 0.0
            if profile is not None:
                spy = _start_profile(profile, duration)
            line = proc.stdout.readline()
            wall = time.perf_counter() - t0
            busy, pg, kmes = (
                _machine_busy_s() - busy0,
                _postgres_cpu_s(pg0),
                pair.cpu_s() - kmes0,
            )
            own = _self_cpu_s() - self0 if topology == "two" else 0.0  # the harness idles
            if line.strip() != "END":
                raise RuntimeError(f"load generator failed: {line!r}")
            res = json.loads(proc.stdout.read().strip().splitlines()[-1])
            if spy is not None:
                spy.wait(timeout=duration + 60)
        if proc.returncode:
            raise RuntimeError(f"load generator exited with {proc.returncode}")
        client = float(res.pop("client_cpu_s"))
        res.update(
            pool=pool,
            store=store,
            mode=mode,
            batch=batch,
            saes=saes,
            rate=rate,
            topology=topology,
            kme_cores=kmes / wall,
            client_cores=client / wall,
            pg_cores=pg / wall,
            other_cores=max(0.0, busy - kmes - own - client - pg) / wall,
        )
        return res
    finally:
        pair.stop()
        if admin is not None:
            time.sleep(1.2)  # let a running erasure sweep (1 s period) finish before the DROP
            with admin.begin() as conn:
                for schema in schemas.values():
                    conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            admin.dispose()
        shutil.rmtree(row_dir, ignore_errors=True)


# -- profile (py-spy) ----------------------------------------------------------------------


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")  # the venv's, when run by its python
    return (
        os.environ.get("PY_SPY")
        or shutil.which("py-spy")
        or (str(beside) if beside.exists() else None)
    )


_SPY_RATE = 200  # samples per second


def _spy_seconds(duration: float) -> int:
    return max(1, int(duration) - 1)


def _start_profile(out: Path, duration: float) -> subprocess.Popen[bytes]:
    spy = _py_spy()
    assert spy is not None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(os.getpid()),
            "--format",
            "raw",
            "--rate",
            str(_SPY_RATE),
            "--duration",
            str(_spy_seconds(duration)),
            "--nonblocking",
            "--gil",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


#: Application operations: a sample with one of these functions on its stack is booked to it
#: (the innermost one), whatever library it was in at the time.
_OPERATIONS = {
    "KeyStore.reserve": "store: reserve (kme-a) and mirrored reserve (kme-b)",
    "KeyStore.fetch": "store: fetch (dec_keys at kme-b)",
    "KeyStore.erase_handed_over": "store: erase the master copies handed over (kme-a)",
    "KeyStore.key_info": "store: key_info (dec_keys picks its store)",
    "KeyStore.sweep": "store: background erasure sweep",
    "KeyStore.erase_delivered": "store: background erasure sweep",
    "KeyStore.checkpoint": "store: WAL checkpoint (background)",
    "PeerClient.post": "kme-a -> kme-b mirroring request (httpx client side)",
}
#: Otherwise booked by the innermost frame whose file matches (the serving stack); py-spy
#: names files relative to their package root ("anyio/to_thread.py", "threading.py").
_LAYERS = [
    ("sslproto.py", "TLS (asyncio SSL protocol, ssl module)"),
    ("(ssl.py:", "TLS (asyncio SSL protocol, ssl module)"),
    ("h11/", "HTTP/1.1 server (uvicorn, h11)"),
    ("uvicorn/", "HTTP/1.1 server (uvicorn, h11)"),
    ("qkdtwin/kms/tls.py", "HTTP/1.1 server (uvicorn, h11)"),
    ("anyio/", "thread-pool hand-off (anyio worker threads)"),
    ("threading.py", "thread-pool hand-off (anyio worker threads)"),
    ("queue.py", "thread-pool hand-off (anyio worker threads)"),
    ("pydantic", "request handling (FastAPI, Starlette, pydantic, KME endpoints)"),
    ("fastapi/", "request handling (FastAPI, Starlette, pydantic, KME endpoints)"),
    ("starlette/", "request handling (FastAPI, Starlette, pydantic, KME endpoints)"),
    ("qkdtwin/kms/", "request handling (FastAPI, Starlette, pydantic, KME endpoints)"),
    ("asyncio/", "event loop (asyncio)"),
    ("selectors.py", "event loop (asyncio)"),
]


def _book(frames: list[str]) -> str:
    names = [f.split(" (")[0] for f in frames]
    for name in reversed(names):
        if name in _OPERATIONS:
            return _OPERATIONS[name]
    for frame in reversed(frames):
        for fragment, layer in _LAYERS:
            if fragment in frame:
                return layer
    return "other"


def summarise_profile(raw: Path) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """Share of the samples per operation or layer (:func:`_book`), and the top leaf frames."""
    booked: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        n = int(count)
        booked[_book(frames)] += n
        name, _, where = frames[-1].partition(" (")
        short = where.split(":")[0].split("/site-packages/")[-1].split("/lib/python3")[-1]
        leaves[f"{name} ({short.split('/src/')[-1]})"] += n
        total += n
    share = [(k, v / total) for k, v in booked.most_common()] if total else []
    top = [(k, v / total) for k, v in leaves.most_common(8)] if total else []
    return share, top, total


# -- main ----------------------------------------------------------------------------------

#: Seconds of the profiled run (at least the closed-loop duration).
PROFILE_S = 12.0


def _pool(cap: int, batch: int, saes: int, rate: float, duration: float) -> int:
    """Keys to import for one row: twice the fastest rate seen here, within the store's cap."""
    need = rate * duration if rate else (8_000 if batch > 1 else 1_000) * duration
    return int(min(cap, max(5_000, 2 * need + 200 * batch * saes)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, default=None, help="rewrite this BENCHMARKS.md section")
    ap.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per closed-loop row")
    ap.add_argument("--saes", default="1,16,64", help="concurrent SAE pairs (closed loop)")
    ap.add_argument("--batches", default="1,100")
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument(
        "--topologies",
        default="one,two",
        help="KMEs in one process (DevNetwork) and/or two (one `kms serve` each)",
    )
    ap.add_argument("--open-rate", type=float, default=5000.0, help="keys/s offered (0: none)")
    ap.add_argument("--open-saes", type=int, default=16)
    ap.add_argument("--open-batch", type=int, default=100)
    ap.add_argument("--open-duration", type=float, default=12.0)
    ap.add_argument(
        "--profile",
        action="store_true",
        help="sample the KMEs with py-spy (PY_SPY or PATH) during SQLite, batch 1, 16 SAEs",
    )
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client is not None:
        print(json.dumps(asyncio.run(_client_main(json.loads(args.client)))), flush=True)
        return
    if args.quick:
        args.duration, args.open_duration = 2.0, 3.0
        args.saes = "16"

    stores = args.stores.split(",")
    saes = [int(x) for x in args.saes.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    # KeyStore's default max_key_count, as DevNetwork opens its stores (--quick: less to import)
    cap = 30_000 if args.quick else 100_000
    topologies = args.topologies.split(",")
    if set(topologies) - set(TOPOLOGIES):
        ap.error(f"--topologies: each one of {', '.join(TOPOLOGIES)}")
    loads: list[tuple[str, str, int, int, float, float, str]] = [
        (s, "roundtrip", b, n, 0.0, args.duration, t)
        for s in stores
        for b in batches
        for n in saes
        for t in topologies
    ]
    if args.open_rate > 0:
        loads += [
            (s, "enc", args.open_batch, args.open_saes, args.open_rate, args.open_duration, t)
            for s in stores
            for t in topologies
        ]
    spy = _py_spy() if args.profile else None
    if args.profile and spy is None:
        print("py-spy not found (set PY_SPY or put it on PATH): no profile", file=sys.stderr)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    profiled: dict[str, Any] | None = None
    started = time.time()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for store, mode, batch, n, rate, duration, topology in loads:
            pool = _pool(cap, batch, n, rate, duration)
            res = run_row(store, mode, batch, n, rate, duration, pool, tmp, topology=topology)
            print(json.dumps(res), flush=True)
            rows.append(res)
        if spy is not None:
            # A run of its own, so that the sampler's CPU does not weigh on the table's rows.
            raw = tmp / "profile.txt"
            seconds = args.duration if args.quick else max(args.duration, PROFILE_S)
            profiled = run_row(
                "sqlite",
                "roundtrip",
                1,
                16,
                0.0,
                seconds,
                _pool(cap, 1, 16, 0.0, seconds),
                tmp,
                raw,
            )
            profiled["profile_s"] = _spy_seconds(seconds)
            print(json.dumps(profiled), flush=True)
            if raw.exists():
                profiled["raw"] = ROOT / "out" / "kms_roundtrip_profile.txt"
                profiled["raw"].parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(raw, profiled["raw"])
    load_after = os.getloadavg()
    md = _report(args, rows, load_before, load_after, time.time() - started, profiled)
    print(md)
    if args.write is not None:
        write_section(args.write, SECTION, md)


def _report(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    took_s: float,
    profiled: dict[str, Any] | None,
) -> str:
    closed = [r for r in rows if r["mode"] == "roundtrip"]
    opened = [r for r in rows if r["mode"] == "enc"]
    other = max((r["other_cores"] for r in rows), default=0.0)
    mean_other = sum(r["other_cores"] for r in rows) / len(rows) if rows else 0.0
    shared = mean_other > 0.05
    cmd = "python benchmarks/kms_roundtrip.py --write BENCHMARKS.md" + (
        " --quick" if args.quick else ""
    )
    cmd += " --profile" if args.profile else ""
    lines = [
        "## KMS round trip (`benchmarks/kms_roundtrip.py`)",
        "",
        "The full ETSI 014 path through a KME pair over mutual TLS: the master SAE's `POST "
        "enc_keys` at kme-a (which reserves the keys and mirrors the reservation at kme-b with "
        "`POST /kme/v1/reservations`, KME-to-KME mutual TLS), then the slave SAE's `POST "
        "dec_keys` at kme-b; the slave's keys are checked against the master's. Column *KME "
        "processes*: **one**, both KMEs in one process as `qkdtwin kms dev-pair` runs them "
        "(`DevNetwork`, one uvicorn server each, feeders off), or **two**, each KME its own "
        "`qkdtwin kms serve --config` process as a deployment runs them (key-encryption key "
        "on, link and relayed stores as in docs/kms.md). A fresh pair and fresh stores serve "
        "each row, the link's pool imported up front (column *pool*, owned by kme-a, in both "
        "stores; material wrapped at rest in both topologies). The load comes from a "
        "separate process: one asyncio client per **SAE pair** (master `sae-a<i>` at kme-a, "
        "slave `sae-b<i>` at kme-b, each its own certificate and one keep-alive HTTP/1.1 "
        "connection), 256-bit keys.",
        "",
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores shared by the KME process, the load "
        f"generator and PostgreSQL; {platform.python_implementation()} "
        f"{platform.python_version()}, SQLite {_sqlite_version()}. Command: `{cmd}` (in "
        f"`make bench`); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; took "
        f"{took_s:.0f} s. "
        + (
            f"**The run shared the machine with other work**: besides the benchmark's own "
            f"processes, {mean_other:.2f} cores on average (up to {other:.2f}) were busy "
            f"(column *other*; load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after)."
            if shared
            else f"Nothing else ran meanwhile (column *other* < 0.05 cores; load average "
            f"{load_before[0]:.1f} before)."
        ),
        "",
        "**Closed loop** (each SAE pair starts its next round trip when the last one "
        f"returned; {args.duration:g} s per row). keys/s: keys delivered to both ends; "
        "latency: one round trip (enc_keys + dec_keys). *CPU/req*: CPU time of the KMEs "
        "per round trip. Then the cores used during the row by the KMEs (both, whatever the "
        "topology), "
        "the load generator, PostgreSQL, and anything else on the machine (*other*).",
        "",
        "| Store | KME processes | Batch | SAE pairs | keys/s | p50 (ms) | p99 (ms) | round "
        "trips | errors | pool | CPU/req (ms) | KMEs | client | PostgreSQL | other |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(_row(r) for r in closed)
    if opened:
        lines += [
            "",
            f"**Open loop**, `enc_keys` only (mirrored at kme-b; no `dec_keys`): "
            f"{args.open_rate:,.0f} keys/s offered in batches of {args.open_batch} for "
            f"{args.open_duration:g} s, spread evenly over {args.open_saes} masters; latency "
            "from each request's scheduled send time (no coordinated omission).",
            "",
            "| Store | KME processes | Batch | SAEs | offered keys/s | keys/s | p50 (ms) | p99 "
            "(ms) | requests | errors | pool | CPU/req (ms) | KMEs | client | PostgreSQL | other |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines.extend(_row(r, offered=True) for r in opened)
    failed = [r for r in rows if r["errors"]]
    if failed:
        lines += [
            "",
            "Errors: "
            + "; ".join(
                f"{r['store']}, batch {r['batch']}, {r['saes']} SAEs"
                + (" (open loop)" if r["mode"] == "enc" else "")
                + ": "
                + ", ".join(f"{n} x {k}" for k, n in sorted(r.get("error_kinds", {}).items()))
                for r in failed
            )
            + ".",
        ]
    lines += ["", *_verdict(closed, opened)]
    lines += ["", *_profile_text(profiled)]
    lines += ["", *_changes_text(closed)]
    return "\n".join(lines)


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _row(r: dict[str, Any], offered: bool = False) -> str:
    cells = [r["store"], str(r.get("topology", "one")), str(r["batch"]), str(r["saes"])]
    if offered:
        cells.append(f"{r['rate']:,.0f}")
    cells += [
        f"{r['keys_per_s']:,.0f}",
        f"{r['p50_ms']:.1f}",
        f"{r['p99_ms']:.1f}",
        str(r["requests"]),
        str(r["errors"]),
        f"{r['pool']:,}",
        f"{_cpu_ms(r):.1f}",
        f"{r['kme_cores']:.2f}",
        f"{r['client_cores']:.2f}",
        f"{r['pg_cores']:.2f}" if r["store"] == "postgresql" else "-",
        f"{r['other_cores']:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _pick(rows: list[dict[str, Any]], **want: Any) -> dict[str, Any] | None:
    hit = [r for r in rows if all(r[k] == v for k, v in want.items())]
    return hit[0] if hit else None


#: Single-key round trips at 16 SAE pairs on SQLite measured before issue 15 (keys/s).
BASELINE_SINGLE_16 = 225.0


def _verdict(closed: list[dict[str, Any]], opened: list[dict[str, Any]]) -> list[str]:
    out = []
    goal = 3 * BASELINE_SINGLE_16
    for topology in TOPOLOGIES:
        t = _pick(closed, store="sqlite", batch=1, saes=16, topology=topology)
        if t is None:
            continue
        out.append(
            f"Target 1 (single-key round trips, 16 SAE pairs, SQLite), KMEs in {topology} "
            f"process{'es' if topology == 'two' else ''}: >= 3 x {BASELINE_SINGLE_16:.0f} = "
            f"{goal:.0f} keys/s: **{'met' if t['keys_per_s'] >= goal else 'not met'}** "
            f"({t['keys_per_s']:,.0f} keys/s, {t['keys_per_s'] / BASELINE_SINGLE_16:.1f} x; the "
            f"KMEs used {t['kme_cores']:.2f} cores of {os.cpu_count()})."
        )
    for topology in TOPOLOGIES:
        o = _pick(opened, store="sqlite", topology=topology)
        if o is None:
            continue
        out.append(
            f"Target 2 (open loop, `enc_keys` at {o['rate']:,.0f} keys/s, batches of "
            f"{o['batch']}, {o['saes']} SAEs, SQLite), KMEs in {topology} "
            f"process{'es' if topology == 'two' else ''}: p99 < 50 ms "
            f"**{'met' if o['p99_ms'] < 50 else 'not met'}** (p99 {o['p99_ms']:.1f} ms, "
            f"p50 {o['p50_ms']:.1f} ms, {o['keys_per_s']:,.0f} keys/s delivered, "
            f"{_cpu_ms(o):.1f} ms of KME CPU per request)."
        )
    return out


def _write_transactions() -> str:
    from qkdtwin.kms.store import KeyStore

    if hasattr(KeyStore, "erase_handed_over"):
        return (
            "four write transactions (reserve at kme-a, mirrored reserve at kme-b, the erasure "
            "of kme-a's handed-over copy, fetch at kme-b)"
        )
    return "three write transactions (reserve at kme-a, mirrored reserve at kme-b, fetch at kme-b)"


def _cpu_ms(r: dict[str, Any]) -> float:
    """CPU milliseconds the KME process spent per request (round trip or enc_keys)."""
    per_s = r["requests"] / r["elapsed_s"] if r["elapsed_s"] else 0.0
    return 1e3 * r["kme_cores"] / per_s if per_s else float("nan")


_STORE = "store: "


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


_SERVING = ("TLS", "HTTP/1.1 server", "request handling", "event loop")


def _profile_text(profiled: dict[str, Any] | None) -> list[str]:
    out = [
        "**Where the time goes.** Both KMEs live in one CPython process (as `kms dev-pair` "
        "runs them). A single-key round trip is three HTTPS requests served (enc_keys at "
        "kme-a, the mirroring POST at kme-b, dec_keys at kme-b), one made (kme-a's mirroring "
        f"POST) and {_write_transactions()}; column *CPU/req* is the KME process's CPU time "
        "per round trip (per request in the open loop). (Until the KMEs' listening socket was "
        "created with `IPPROTO_TCP`, asyncio did not set `TCP_NODELAY` on their connections "
        "and most responses waited ~40 ms for the client's delayed ACK: one SAE pair managed "
        "18 round trips/s, p50 53 ms.)",
    ]
    raw = None if profiled is None else profiled.get("raw")
    if profiled is None or raw is None:
        out += [
            "",
            "(Run with `--profile` and py-spy on PATH or in `PY_SPY` to add a profile of the "
            "KME process during a SQLite single-key 16-SAE run.)",
        ]
        return out
    t = profiled
    seconds = float(t["profile_s"])
    share, top, total = summarise_profile(raw)
    gil = total / (_SPY_RATE * seconds) if seconds else float("nan")
    store = sum(v for k, v in share if k.startswith(_STORE))
    serving = sum(v for k, v in share if k.startswith(_SERVING))
    handoff = sum(v for k, v in share if k.startswith("thread-pool"))
    peer = sum(v for k, v in share if k.startswith("kme-a -> kme-b"))
    cpu = _cpu_ms(t)
    out += [
        "",
        f"Profile: a separate SQLite single-key 16-SAE run of {t['elapsed_s']:.0f} s "
        f"({t['keys_per_s']:,.0f} keys/s, p50 {t['p50_ms']:.0f} ms, {cpu:.1f} ms CPU per "
        f"round trip, {t['kme_cores']:.2f} cores for the KMEs, {t['other_cores']:.2f} for "
        f"other work, py-spy included) sampled by py-spy (`record --gil`, {_SPY_RATE} Hz "
        f"for {seconds:g} s: "
        f"{total:,} samples, so the GIL was held {gil:.0%} of the time; raw stacks in "
        f"`{_rel(raw)}`). Each sample is booked to the application operation on its stack, "
        "else to the serving layer of its innermost frame:",
        "",
        "| Operation or layer | share of the GIL-holding samples |",
        "|---|---:|",
        *(f"| {k} | {v:.0%} |" for k, v in share[:12]),
        "",
        "Top innermost functions: "
        + "; ".join(f"`{k.replace('|', '/')}` {v:.0%}" for k, v in top[:6])
        + ".",
        "",
        f"**Bottleneck: CPU in the KME process, spread over its whole request path.** The pair "
        f"spends {cpu:.1f} ms of CPU per single-key round trip: {store:.0%} of the samples in "
        f"the store's transactions (all of them together), {serving:.0%} serving HTTPS (TLS, "
        f"uvicorn/h11, FastAPI/Starlette/pydantic, event loop), {handoff:.0%} handing each "
        f"request to a worker thread and back, {peer:.0%} in kme-a's client for the mirroring "
        f"request; no single function takes more than {top[0][1]:.0%}. The GIL was held "
        f"{gil:.0%} of the time, so the interpreter lock is not what stops it here: on this "
        f"2-core machine the process got {t['kme_cores']:.2f} cores while other work took "
        f"{t['other_cores']:.2f}. The ceiling is cores / CPU per round trip: about "
        f"{1e3 / cpu:,.0f} single-key round trips/s per free core at this cost (and one "
        "process cannot use much more than one core), whatever the store. Reaching "
        f"{3 * BASELINE_SINGLE_16:.0f}/s needs under {1e3 / (3 * BASELINE_SINGLE_16):.1f} ms "
        "of CPU per round trip, or more cores per KME (one process per KME, several workers): "
        "not a faster store.",
    ]
    return out


def _changes_text(closed: list[dict[str, Any]]) -> list[str]:
    """What the rows owe to the changes of issue 15's last round, and the two-process rows."""
    one = _pick(closed, store="sqlite", batch=1, saes=16, topology="one")
    two = _pick(closed, store="sqlite", batch=1, saes=16, topology="two")
    out = [
        "**Tail latency and the store's locks.** SQLite allows one writer at a time; the store "
        "queues this process's writers on a lock and starts each write transaction with "
        "`BEGIN IMMEDIATE`. Until this round, reads went through the same engine, so "
        "`dec_keys`' lookup of its store (`key_info`) took the database's write lock without "
        "the queue and fell into SQLite's busy handler (sleep and retry): measured with "
        "per-call timers, that lookup waited up to 2.0 s and the single-key 16-SAE row had "
        "p99 900 ms (108 keys/s). Reads now go through a second, read-only engine with "
        "deferred transactions (in WAL mode a reader never waits for the writer), and the "
        "erasure of handed-over master copies is coalesced across concurrent responses "
        "(`qkdtwin.kms.handover`: one transaction for all the responses that finished while "
        "the previous erasure ran): the single-key 16-SAE row in one process, above, is what "
        "came of it (p99 900 ms and 108 keys/s before).",
    ]
    out += [
        "",
        "**The open-loop p99.** The client reports the slowest 1 % of the requests with "
        "their start times (`slowest`): spread out, they are queueing; clustered, a stall. "
        "With per-call timers on the stores' operations and `gc.callbacks` in the in-process "
        "pair, two stalls stood out, and both are gone: (1) the erasure sweep (every 1 s) "
        "held kme-b's write lock for 46-57 ms, because it looked for master-side copies "
        "among every reserved key of the last minute (probing each for a slave grant) and, "
        "in an enc-only run, kme-b holds all the reservations its slaves have not fetched "
        "(40,000-60,000 keys); the copies are now listed in a table of their own "
        "(`kms_handover`, written with the reservation, cleared by the hand-over) and each "
        "kind of candidate is selected by index before the UPDATE by primary key: 0.3 ms per "
        "sweep with 40,000 keys waiting. (2) Full garbage collections, 55-62 ms each with the "
        "event loop stopped, walking the few hundred thousand objects start-up made; a KME "
        "process now moves those out of the collector's sight once it serves "
        "(`qkdtwin.ops.freeze_startup_objects`, `gc.freeze`). Two-process 16-SAE row, p99 "
        "over repeated runs on a quiet machine: 53-67 ms before, 44-56 ms with the sweep "
        "fixed, 37-40 ms with both; in one process 60-69 -> 39-45 ms. In full benchmark "
        "runs the same row gave 38.4 ms and 51.3 ms (two processes) and 49.0 ms (one "
        "process, with 0.3 cores of other work on the machine): at 5,000 keys/s the KMEs use "
        "~0.8 of the 2 shared cores, so the target holds on a quiet machine and sits at its "
        "edge when other work takes a third of a core. (In an earlier round "
        "`gc.freeze()` alone had not helped, because the sweep's stalls hid it.) Measured "
        "and dropped before: uvloop as the event loop (CPU per request -5 %, p99 unchanged).",
    ]
    if one is not None and two is not None:
        out += [
            "",
            f"**One process per KME.** With each KME its own process (rows *two*) the same "
            f"load ran at {two['keys_per_s']:,.0f} keys/s (p99 {two['p99_ms']:.0f} ms) against "
            f"{one['keys_per_s']:,.0f} (p99 {one['p99_ms']:.0f} ms) in one process; the two "
            f"KMEs used {two['kme_cores']:.2f} cores together, of 2 shared with the load "
            "generator. Our reading of the ceiling: py-spy finds the interpreter lock held only "
            "40-46 % of the time while the in-process pair uses a whole core, so most of the "
            "rest is SQLite's own C code; each KME's write transactions run one at a time "
            "under its store's writer lock (SQLite has one writer), SQLite's work and the "
            "Python around it (SQLAlchemy, wrapping) included, so a KME's store work never "
            "runs on two cores at once. "
            "`fsync` is not it (`synchronous=FULL`, needed so that a committed reservation "
            "survives a power cut: 0.24 ms p50 on this disk). More throughput per KME needs "
            "several processes per KME sharing its stores, or a store transaction with less "
            "Python in it.",
        ]
    return out


if __name__ == "__main__":
    main()
