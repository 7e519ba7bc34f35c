"""Load generator of ``test_admission.py``: many SAE clients hammering ``enc_keys``.

Run as a separate process (``python sae_load.py PLAN.json OUT.json``) so that the clients do
not share the KMEs' interpreter lock, and their timeouts are measured by their own clock.

Each client loops until the plan's deadline: it (re)connects over mutual TLS if needed,
sends ``POST /api/v1/keys/<slave>/enc_keys`` and waits for the whole answer at most its
timeout (drawn per request, uniform in ``[timeout_min_s, timeout_max_s]``, counting the
connection set-up). On timeout it aborts the connection (as a client that gives up does) and
records the request as timed out; on 503 it sleeps a random part of ``Retry-After``. A
minimal HTTP/1.1 client on asyncio TLS streams keeps the load generator cheap next to the
servers. The plan::

    {"groups": [{"port": 1234, "cert": ..., "key": ..., "slave": "sae-b", "clients": 32,
                 "number": 2}], "ca": ..., "duration_s": 4.0, "timeout_min_s": 0.5,
     "timeout_max_s": 3.0, "seed": 1}

The output lists every request: group, start (seconds from the run's start), latency,
timeout, outcome (``ok``, ``busy`` for an admission 503, ``503`` for another 503,
``timeout``, ``error``) and, for ``ok``, the keys as ``[key_ID, base64 material]``.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import sys
import time
from typing import Any


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def abort(self) -> None:
        self.writer.transport.abort()


async def _open(port: int, ctx: ssl.SSLContext) -> _Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    return _Conn(reader, writer)


async def _post(conn: _Conn, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode()
    conn.writer.write(
        b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
    )
    head = await conn.reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    payload = await conn.reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, json.loads(payload) if payload else None


async def _attempt(
    used: list[_Conn], port: int, ctx: ssl.SSLContext, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], Any]:
    """One request, on ``used[0]`` or on a new connection appended to ``used``."""
    if not used:
        used.append(await _open(port, ctx))
    return await _post(used[0], path, body)


async def _client(
    group: int, spec: dict[str, Any], plan: dict[str, Any], rng: random.Random, t0: float
) -> list[dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=plan["ca"])
    ctx.load_cert_chain(spec["cert"], spec["key"])
    path = f"/api/v1/keys/{spec['slave']}/enc_keys"
    deadline = t0 + plan["duration_s"]
    out: list[dict[str, Any]] = []
    conn: _Conn | None = None
    await asyncio.sleep(rng.uniform(0, 0.2))  # not all at the same instant
    while time.monotonic() < deadline:
        timeout = rng.uniform(plan["timeout_min_s"], plan["timeout_max_s"])
        start = time.monotonic()
        rec: dict[str, Any] = {"group": group, "start": start - t0, "timeout": timeout}

        used: list[_Conn] = [] if conn is None else [conn]

        try:
            status, headers, answer = await asyncio.wait_for(
                _attempt(used, spec["port"], ctx, path, {"number": spec["number"]}), timeout
            )
            conn = used[0]
        except TimeoutError:
            # give up as a real client does: drop the connection (the request may still be
            # queued or served at the KME; a connection still opening is simply cancelled)
            rec.update(outcome="timeout", latency=time.monotonic() - start)
            for c in used:
                c.abort()
            conn = None
            out.append(rec)
            continue
        except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError) as exc:
            rec.update(outcome="error", latency=time.monotonic() - start, error=repr(exc))
            for c in used:
                c.abort()
            conn = None
            out.append(rec)
            await asyncio.sleep(0.05)
            continue
        rec["latency"] = time.monotonic() - start
        rec["status"] = status
        if status == 200:
            rec["outcome"] = "ok"
            rec["keys"] = [[k["key_ID"], k["key"]] for k in answer["keys"]]
        elif status == 503 and "retry-after" in headers:
            rec["outcome"] = "busy"
            rec["message"] = answer.get("message") if isinstance(answer, dict) else None
        else:
            rec["outcome"] = "503" if status == 503 else "error"
            rec["message"] = answer.get("message") if isinstance(answer, dict) else None
        out.append(rec)
        if status == 503:
            retry = float(headers.get("retry-after", "0.2"))
            await asyncio.sleep(rng.uniform(0.1, 1.0) * retry)
    if conn is not None:
        conn.writer.close()
    return out


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Run the plan; return ``{"requests": [...], "wall_s": ...}``."""
    rng = random.Random(plan.get("seed", 1))
    t0 = time.monotonic()
    tasks = []
    for g, spec in enumerate(plan["groups"]):
        for _ in range(spec["clients"]):
            client_rng = random.Random(rng.getrandbits(64))
            tasks.append(_client(g, spec, plan, client_rng, t0))
    results = await asyncio.gather(*tasks)
    return {
        "requests": [r for rs in results for r in rs],
        "wall_s": time.monotonic() - t0,
    }


def main() -> None:
    """``python sae_load.py PLAN.json OUT.json``."""
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    result = asyncio.run(run(plan))
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
