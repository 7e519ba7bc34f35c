"""Crash test: SIGKILL a KME under concurrent load, restart it, no key is delivered twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from qkdtwin.errors import KmsError
from qkdtwin.kms import KeyStore
from qkdtwin.kms.client import KmeClient
from qkdtwin.kms.tls import Pki, init_pki
from tests.ports import free_port

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e


@contextmanager
def _serve(tmp: Path, pki: Pki, db: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start `qkdtwin kms serve` on a free port; yield (process, url) once it answers."""
    cert, key = pki.saes["sae-a"]
    for _attempt in range(3):  # the port may be taken between probe and bind: retry
        port = free_port()
        cfg = tmp / "kme.yaml"
        cfg.write_text(
            f"port: {port}\ndb: {db}\n"
            f"cert: {pki.kmes['kme-a'][0]}\nkey: {pki.kmes['kme-a'][1]}\nca: {pki.ca_cert}\n"
            "kme: {kme_id: kme-a, saes: {sae-a: kme-a, sae-b: kme-a}, max_key_per_request: 10}\n"
        )
        url = f"https://127.0.0.1:{port}"
        with subprocess.Popen(
            [sys.executable, "-m", "qkdtwin", "kms", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc:
            try:
                with KmeClient(url, cert, key, pki.ca_cert, timeout_s=5.0) as c:
                    deadline = time.monotonic() + 30
                    while proc.poll() is None:
                        try:
                            c.status("sae-b")
                            break
                        except KmsError:
                            assert time.monotonic() < deadline, "serve not ready in 30 s"
                            time.sleep(0.1)
                if proc.poll() is None:
                    yield proc, url
                    return
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)
    raise AssertionError("qkdtwin kms serve did not start on any of 3 ports")


def test_sigkill_under_load_never_delivers_twice(tmp_path: Path, db_url: str) -> None:
    pki = init_pki(tmp_path / "pki", kme_ids=["kme-a"], sae_ids=["sae-a", "sae-b"])
    db = db_url
    store = KeyStore(db)
    supplied = {str(uuid.uuid4()): os.urandom(32) for _ in range(3000)}
    store.add_keys(supplied.items())
    store.close()
    cert, key = pki.saes["sae-a"]
    received: list[str] = []
    lock = threading.Lock()

    def load(url: str, stop: threading.Event) -> None:
        with KmeClient(url, cert, key, pki.ca_cert, timeout_s=5.0) as c:
            while not stop.is_set():
                try:
                    keys = c.get_keys("sae-b", number=5)
                except KmsError:
                    return
                with lock:
                    received.extend(k.key_id for k in keys)
                assert all(supplied[k.key_id] == k.material for k in keys)

    with _serve(tmp_path, pki, db) as (proc, url):
        stop = threading.Event()
        threads = [threading.Thread(target=load, args=(url, stop)) for _ in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(received) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # mid-load, with requests in flight
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(15)
    assert len(received) >= 100
    before = list(received)
    assert len(before) == len(set(before))

    # after the crash: every key handed out is on record as reserved and audited
    store = KeyStore(db)
    try:
        audit = [e["key_id"] for e in store.audit_log() if e["action"] == "enc"]
        assert len(audit) == len(set(audit))
        assert set(before) <= set(audit)
        states = {k: store.key_info(k) for k in supplied}
        assert all(s is not None and s.state in ("available", "reserved") for s in states.values())
        reserved = {k for k, s in states.items() if s is not None and s.state == "reserved"}
        assert reserved == set(audit)
        available_before = store.available_count()
        assert available_before == len(supplied) - len(reserved)
    finally:
        store.close()

    # restart: the KME serves on, and never one of the keys delivered before the crash
    received.clear()
    with _serve(tmp_path, pki, db) as (_proc, url), KmeClient(url, cert, key, pki.ca_cert) as c:
        after = [k.key_id for _ in range(10) for k in c.get_keys("sae-b", number=10)]
    assert not set(after) & set(audit)
    assert len(after) == len(set(after)) == 100
