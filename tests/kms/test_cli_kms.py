"""``qkdtwin kms``: the PKI command, and ``dev-pair`` driven end to end in a subprocess."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from qkdtwin.cli import main
from qkdtwin.kms.client import KmeClient


def test_pki_init_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kms", "pki", "init", str(tmp_path / "pki"), "--sae", "s1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["ca_cert"]).is_file()
    assert set(out["saes"]) == {"s1"}
    assert Path(out["saes"]["s1"]["key"]).stat().st_mode & 0o077 == 0


def test_pki_init_bad_ids_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kms", "pki", "init", str(tmp_path), "--sae", "a/b"]) == 2
    assert capsys.readouterr().err.startswith("qkdtwin: error:")


def test_serve_bad_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "kme.yaml"
    cfg.write_text("port: 1\n")
    assert main(["kms", "serve", "--config", str(cfg)]) == 2
    assert "cert" in capsys.readouterr().err


def _device_keys(path: Path) -> Path:
    import numpy as np

    from qkdtwin.qkd.postprocess.pipeline import write_keys

    bits = np.random.default_rng(3).integers(0, 2, 256 * 4, dtype=np.uint8)
    write_keys(path, bits, np.random.default_rng(4), 256)
    return path


@contextmanager
def _run_dev_pair(directory: Path, *args: str) -> Iterator[dict[str, Any]]:
    """Run ``qkdtwin kms dev-pair DIR --json ARGS`` until the block ends; yield its JSON line."""
    err_path = directory / "stderr.txt"
    with (
        err_path.open("wb") as err,
        subprocess.Popen(
            [sys.executable, "-m", "qkdtwin", "kms", "dev-pair", str(directory), "--json", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60.0)
            line = proc.stdout.readline() if ready else b""
            if not line:
                pytest.fail(f"dev-pair did not start: {err_path.read_text()}")
            yield json.loads(line)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        assert proc.returncode == 0, err_path.read_text()


@pytest.fixture(scope="module")
def dev_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("pair")
    keys = _device_keys(directory / "device-keys.txt")
    with _run_dev_pair(directory, "--import-keys", str(keys)) as info:
        yield info


def test_dev_pair_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Each KME's store in its own schema of the real PostgreSQL server."""
    import uuid

    import sqlalchemy as sa

    from .conftest import PG_URL

    schema_b = f"kms_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema_b}")
    try:
        url_b = f"{PG_URL}?options=-csearch_path%3D{schema_b}"
        with _run_dev_pair(tmp_path, "--db", pg_url, "--db-b", url_b) as info:
            a, b = info["sae_a"], info["sae_b"]
            ca = Path(info["ca_cert"])
            with (
                KmeClient(info["kme_a_url"], Path(a["cert"]), Path(a["key"]), ca) as kme_a,
                KmeClient(info["kme_b_url"], Path(b["cert"]), Path(b["key"]), ca) as kme_b,
            ):
                keys = kme_a.get_keys("sae-b", number=4)
                assert kme_b.get_keys_with_ids("sae-a", [k.key_id for k in keys]) == keys
        from qkdtwin.kms import KeyStore

        for url, action in ((pg_url, "enc"), (url_b, "dec")):
            store = KeyStore(url)
            try:
                logged = {(e["key_id"], e["action"]) for e in store.audit_log()}
                assert all((k.key_id, action) in logged for k in keys)
            finally:
                store.close()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema_b} CASCADE")
        admin.dispose()


def test_single_db_url_gives_each_kme_its_own_store(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from qkdtwin.cli_kms import _per_kme_url
    from qkdtwin.errors import ConfigError

    from .conftest import PG_URL

    assert _per_kme_url(f"sqlite:///{tmp_path}/k.db", "kme-a") == f"sqlite:///{tmp_path}/k-kme-a.db"
    urls = {_per_kme_url(PG_URL, k) for k in ("kme-a", "kme-b")}
    assert len(urls) == 2
    assert all("search_path" in u for u in urls)
    admin = sa.create_engine(PG_URL)
    with admin.connect() as conn:
        schemas = set(conn.exec_driver_sql("SELECT nspname FROM pg_namespace").scalars())
    admin.dispose()
    assert {"qkdtwin_kme_a", "qkdtwin_kme_b"} <= schemas
    with pytest.raises(ConfigError, match="--db"):
        _per_kme_url("ftp://x/y", "kme-a")


def test_dev_pair_master_and_slave_on_two_kmes(dev_pair: dict[str, Any]) -> None:
    info = dev_pair
    assert set(info) == {"kme_a_url", "kme_b_url", "ca_cert", "sae_a", "sae_b"}
    a, b = info["sae_a"], info["sae_b"]
    ca = Path(info["ca_cert"])
    with (
        KmeClient(info["kme_a_url"], Path(a["cert"]), Path(a["key"]), ca) as kme_a,
        KmeClient(info["kme_b_url"], Path(b["cert"]), Path(b["key"]), ca) as kme_b,
    ):
        status = kme_a.status("sae-b")
        assert status["source_KME_ID"] == "kme-a"
        assert status["target_KME_ID"] == "kme-b"
        assert status["stored_key_count"] >= 5
        keys = kme_a.get_keys("sae-b", number=5)
        assert kme_b.get_keys_with_ids("sae-a", [k.key_id for k in keys]) == keys


def test_dev_pair_has_one_store_per_kme(dev_pair: dict[str, Any]) -> None:
    from qkdtwin.kms import KeyStore

    a, b = dev_pair["sae_a"], dev_pair["sae_b"]
    ca = Path(dev_pair["ca_cert"])
    with (
        KmeClient(dev_pair["kme_a_url"], Path(a["cert"]), Path(a["key"]), ca) as kme_a,
        KmeClient(dev_pair["kme_b_url"], Path(b["cert"]), Path(b["key"]), ca) as kme_b,
    ):
        sent = kme_b.get_keys("sae-a", number=3)  # kme-b as master's KME, too
        assert kme_a.get_keys_with_ids("sae-b", [k.key_id for k in sent]) == sent
    directory = Path(a["cert"]).parent
    stores = [KeyStore(f"sqlite:///{directory / n}") for n in ("kme-a.db", "kme-b.db")]
    try:
        from qkdtwin.kms.feeder import read_key_file

        for key_id, _material in read_key_file(directory / "device-keys.txt"):
            assert all(s.key_info(key_id) is not None for s in stores)  # imported into both
        audits = [{(e["key_id"], e["action"]) for e in s.audit_log()} for s in stores]
        # kme-b delivered to its master ("enc"); kme-a mirrored it ("sync") and served the slave
        for k in sent:
            assert (k.key_id, "enc") in audits[1]
            assert (k.key_id, "sync") in audits[0]
            assert (k.key_id, "dec") in audits[0]
    finally:
        for s in stores:
            s.close()


def test_cli_client_commands(dev_pair: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    info = dev_pair
    a, b = info["sae_a"], info["sae_b"]
    auth_a = ["--cert", a["cert"], "--key", a["key"], "--ca", info["ca_cert"]]
    auth_b = ["--cert", b["cert"], "--key", b["key"], "--ca", info["ca_cert"]]
    assert main(["kms", "status", "sae-b", "--kme", info["kme_a_url"], *auth_a]) == 0
    assert json.loads(capsys.readouterr().out)["slave_SAE_ID"] == "sae-b"
    argv = ["kms", "get-keys", "sae-b", "--kme", info["kme_a_url"], *auth_a, "-n", "2"]
    assert main([*argv, "--size", "128"]) == 0
    keys = json.loads(capsys.readouterr().out)["keys"]
    ids = [k["key_ID"] for k in keys]
    argv = ["kms", "get-keys-with-ids", "sae-a", *ids, "--kme", info["kme_b_url"], *auth_b]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["keys"] == keys
    # sae-b asking kme-a (not its KME) is refused: one stderr line, exit 2
    argv = ["kms", "get-keys", "sae-a", "--kme", info["kme_a_url"], *auth_b]
    assert main(argv) == 2
    assert "401" in capsys.readouterr().err


def test_dev_pair_feeder_refills(dev_pair: dict[str, Any]) -> None:
    a = dev_pair["sae_a"]
    ca = Path(dev_pair["ca_cert"])
    with KmeClient(dev_pair["kme_a_url"], Path(a["cert"]), Path(a["key"]), ca) as kme_a:
        before = kme_a.status("sae-b")["stored_key_count"]
        deadline = time.monotonic() + 10
        while kme_a.status("sae-b")["stored_key_count"] <= before:
            assert time.monotonic() < deadline, "feeder added no key in 10 s"
            time.sleep(0.2)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_subprocess(tmp_path: Path) -> None:
    from qkdtwin.errors import KeyExhaustedError, KmsError
    from qkdtwin.kms.tls import init_pki

    pki = init_pki(tmp_path / "pki", kme_ids=["kme-a"], sae_ids=["sae-a", "sae-b"])
    cert, key = pki.saes["sae-a"]
    for _attempt in range(3):  # the port may be taken between probe and bind: retry
        port = _free_port()
        cfg = tmp_path / "kme.yaml"
        cfg.write_text(
            f"port: {port}\ndb: sqlite:///{tmp_path / 'kme.db'}\n"
            f"cert: {pki.kmes['kme-a'][0]}\nkey: {pki.kmes['kme-a'][1]}\nca: {pki.ca_cert}\n"
            "kme: {kme_id: kme-a, saes: {sae-a: kme-a, sae-b: kme-a}}\n"
        )
        with subprocess.Popen(
            [sys.executable, "-m", "qkdtwin", "kms", "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc:
            try:
                with KmeClient(f"https://127.0.0.1:{port}", cert, key, pki.ca_cert) as c:
                    deadline = time.monotonic() + 30
                    while proc.poll() is None:
                        try:
                            status = c.status("sae-b")
                            break
                        except KmsError:
                            assert time.monotonic() < deadline, "serve not ready in 30 s"
                            time.sleep(0.1)
                    else:
                        continue  # exited (port taken?): try another port
                    assert status["stored_key_count"] == 0
                    with pytest.raises(KeyExhaustedError):
                        c.get_keys("sae-b")
                    return
            finally:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
    pytest.fail("qkdtwin kms serve did not start on any of 3 ports")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--feed", "bogus"], "--feed"),
        (["--db-b", "sqlite:///x.db"], "--db"),
        (["--db", "ftp://host/db"], "--db"),
    ],
)
def test_dev_pair_bad_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert main(["kms", "dev-pair", str(tmp_path / "pair"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qkdtwin: error:")
    assert needle in err
