"""Start ``qkdtwin twin serve`` for a benchmark, its output in a file (never an unread pipe).

A served twin at 1,000 links once logged ~20 MB of warnings in two minutes (its stores had run
out of file descriptors). Into a pipe that nobody reads after the first line, that fills the
pipe's 64 KB and the twin blocks on its next write: it looked like a twin that stopped
answering. So the output goes to ``LOG`` in the point's work directory, and the URL is read
from the log's first line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

LOG = "serve.log"
#: Where a served twin's jitted code first runs (the report text of twin_load and twin_scale).
NUMBA_NOTE = (
    "Numba: each twin process runs its jitted code before the measured window (the policy "
    "re-plan when `Twin()` is built, Cascade in the first tick's calibration), so the window "
    "is warm; numba's on-disk cache (`make venv` caches both) only changes the start-up and "
    "warm-up."
)


def tail(path: Path, nbytes: int = 4000) -> str:
    """The last ``nbytes`` of the served twin's log (for an error message)."""
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-nbytes:].decode(errors="replace")


def serve(
    scenario: Path, work: Path, timeout_s: float = 600.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the twin on a free port with ``scenario``; return the process and its base URL.

    Raises RuntimeError (with the log's tail) when the process ends or ``timeout_s`` passes
    before it prints where it listens.
    """
    exe = Path(sys.executable).with_name("qkdtwin")
    log = work / LOG
    cmd = [str(exe), "twin", "serve", "--scenario", str(scenario), "--port", "0", "--speed", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--data-dir", str(work / "data")], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout_s
    while True:
        # "qkdtwin twin: dashboard at http://HOST:PORT/ ..."
        found = re.search(r"(http://[^/\s]+)/", tail(log, 1 << 16).split("\n", 1)[0])
        if found is not None:
            return proc, found.group(1)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"twin serve did not say where it listens:\n{tail(log)}")
        time.sleep(0.2)
