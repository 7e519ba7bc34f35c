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
from tests.ports import free_port

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e


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


#: Subprocess environment: warnings are errors, and stdout is buffered as in production, so a
#: line a test waits for must be flushed by the command itself.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {
    "PYTHONWARNINGS": "error"
}


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
            env=_ENV,
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
        from qkdtwin.kms.kek import load_kek

        kek = load_kek(tmp_path / "kek.bin")  # dev-pair wraps with the PKI's KEK
        for url, action in ((pg_url, "enc"), (url_b, "dec")):
            store = KeyStore(url, kek=kek)
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

    from qkdtwin.cli.kms_checks import per_kme_url
    from qkdtwin.errors import ConfigError

    from .conftest import PG_URL

    assert per_kme_url(f"sqlite:///{tmp_path}/k.db", "kme-a") == f"sqlite:///{tmp_path}/k-kme-a.db"
    urls = {per_kme_url(PG_URL, k) for k in ("kme-a", "kme-b")}
    assert len(urls) == 2
    assert all("search_path" in u for u in urls)
    admin = sa.create_engine(PG_URL)
    with admin.connect() as conn:
        schemas = set(conn.exec_driver_sql("SELECT nspname FROM pg_namespace").scalars())
    admin.dispose()
    assert {"qkdtwin_kme_a", "qkdtwin_kme_b"} <= schemas
    with pytest.raises(ConfigError, match="--db"):
        per_kme_url("ftp://x/y", "kme-a")


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
    from qkdtwin.kms.kek import load_kek

    kek = load_kek(directory / "kek.bin")  # dev-pair wraps with the PKI's KEK
    stores = [KeyStore(f"sqlite:///{directory / n}", kek=kek) for n in ("kme-a.db", "kme-b.db")]
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


def test_serve_subprocess(tmp_path: Path) -> None:
    from qkdtwin.errors import KeyExhaustedError, KmsError
    from qkdtwin.kms.tls import init_pki

    pki = init_pki(tmp_path / "pki", kme_ids=["kme-a"], sae_ids=["sae-a", "sae-b"])
    cert, key = pki.saes["sae-a"]
    for _attempt in range(3):  # the port may be taken between probe and bind: retry
        port = free_port()
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


# --------------------------------------------------------------------------- bad input: one line
EXAMPLE = Path(__file__).parents[2] / "examples" / "kms-kme-a.yaml"


def _assert_one_error_line(out: str, err: str, *needles: str) -> None:
    """Exactly one ``qkdtwin: error:`` line on stderr, naming every needle; no traceback."""
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("qkdtwin: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    """Run the CLI in-process; expect exit 2 and one stderr line naming ``needles``."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    _assert_one_error_line(out, err, *needles)


def _fails_in_subprocess(argv: list[str], *needles: str, cwd: Path | None = None) -> None:
    """As :func:`_fails`, as a real process: nothing else (logs, warnings) reaches stderr."""
    r = subprocess.run(
        [sys.executable, "-m", "qkdtwin", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=_ENV,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    _assert_one_error_line(r.stdout, r.stderr, *needles)


def _write_serve_config(tmp: Path, **fields: Any) -> Path:
    """A ``kms serve`` config with a fresh PKI in ``tmp/pki``; ``fields`` override entries."""
    from qkdtwin.kms.tls import init_pki

    pki_dir = tmp / "pki"
    if not (pki_dir / "ca.pem").exists():
        init_pki(pki_dir, kme_ids=["kme-a"], sae_ids=["sae-a", "sae-b"])
    entries: dict[str, Any] = {
        "port": 0,
        "db": f"sqlite:///{tmp / 'kme.db'}",
        "cert": str(pki_dir / "kme-a.pem"),
        "key": str(pki_dir / "kme-a.key"),
        "ca": str(pki_dir / "ca.pem"),
    } | fields
    cfg = tmp / "kme.yaml"
    cfg.write_text(
        "".join(f"{k}: {json.dumps(v)}\n" for k, v in entries.items())
        + "kme: {kme_id: kme-a, saes: {sae-a: kme-a, sae-b: kme-a}}\n"
    )
    return cfg


def test_serve_example_before_pki_init_names_the_file(tmp_path: Path) -> None:
    """The issue's case: the example config, run before ``kms pki init pki``."""
    argv = ["kms", "serve", "--config", str(EXAMPLE)]
    _fails_in_subprocess(argv, "pki/kme-a.pem", "qkdtwin kms pki init pki", cwd=tmp_path)
    assert not (tmp_path / "kme-a.db").exists()  # nothing was created


def test_serve_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    _fails(capsys, ["kms", "serve", "--config", str(missing)], "--config", str(missing))


@pytest.mark.parametrize(
    ("field", "value", "needles"),
    [
        ("ca", "{tmp}/elsewhere/ca.pem", ["ca", "{tmp}/elsewhere/ca.pem", "kms pki init"]),
        ("key", "{tmp}/pki/gone.key", ["key", "{tmp}/pki/gone.key", "kms pki init"]),
        ("kek_file", "{tmp}/kek.bin", ["kek_file", "{tmp}/kek.bin"]),
        ("db", "foo://bar", ["db", "'foo://bar'", "sqlite:///PATH", "postgresql://"]),
        ("db", "sqlite:///{tmp}/no-dir/kme.db", ["db", "{tmp}/no-dir", "does not exist"]),
        ("key", "{tmp}/pki/sae-a.key", ["cert", "{tmp}/pki/sae-a.key"]),  # not the cert's key
    ],
)
def test_serve_bad_file_or_url_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: str,
    needles: list[str],
) -> None:
    cfg = _write_serve_config(tmp_path, **{field: value.format(tmp=tmp_path)})
    _fails(
        capsys, ["kms", "serve", "--config", str(cfg)], *(n.format(tmp=tmp_path) for n in needles)
    )


def test_serve_port_in_use_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = _write_serve_config(tmp_path, port=port)
        argv = ["kms", "serve", "--config", str(cfg)]
        _fails_in_subprocess(argv, f"127.0.0.1:{port} is in use", "Address already in use")
    assert not (tmp_path / "kme.db").exists()  # checked before any store is opened


@contextmanager
def _run_serve(cfg: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Run ``qkdtwin kms serve --config CFG --json``; yield its pid and its JSON line.

    Afterwards Ctrl-C (SIGINT) must stop it with status 0, having printed nothing else.
    """
    with subprocess.Popen(
        [sys.executable, "-m", "qkdtwin", "kms", "serve", "--config", str(cfg), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_ENV,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60.0)
            line = proc.stdout.readline() if ready else b""
            if not line:
                proc.kill()
                pytest.fail(f"kms serve printed no line: {proc.communicate()[1].decode()}")
            yield proc.pid, json.loads(line)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise
        assert proc.returncode == 0, err.decode()
        assert out == b""  # the one line, nothing more
        assert err == b""


def test_serve_json_prints_a_url_that_answers(tmp_path: Path) -> None:
    cfg = _write_serve_config(tmp_path, port=0)  # any free port: the line says which
    pki = tmp_path / "pki"
    with _run_serve(cfg) as (pid, info):
        assert info["kme_id"] == "kme-a"
        assert info["pid"] == pid
        assert info["url"] == f"https://127.0.0.1:{info['port']}"
        with KmeClient(info["url"], pki / "sae-a.pem", pki / "sae-a.key", pki / "ca.pem") as c:
            assert c.status("sae-b")["source_KME_ID"] == "kme-a"  # answers at once


@pytest.mark.parametrize("command", ["status", "get-keys", "get-keys-with-ids"])
@pytest.mark.parametrize("missing", ["--cert", "--key", "--ca"])
def test_client_missing_pki_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, missing: str
) -> None:
    from qkdtwin.kms.tls import init_pki

    pki = init_pki(tmp_path / "pki", kme_ids=["kme-a"], sae_ids=["sae-a"])
    files = {"--cert": pki.saes["sae-a"][0], "--key": pki.saes["sae-a"][1], "--ca": pki.ca_cert}
    files[missing] = tmp_path / "gone" / "file.pem"
    args = {"status": ["sae-b"], "get-keys": ["sae-b"], "get-keys-with-ids": ["sae-b", "id1"]}
    auth = [str(x) for kv in files.items() for x in kv]
    argv = ["kms", command, *args[command], "--kme", "https://127.0.0.1:1", *auth]
    _fails(capsys, argv, missing, str(tmp_path / "gone" / "file.pem"), "kms pki init")


@pytest.mark.parametrize("url", ["127.0.0.1:8443", "http://127.0.0.1:8443", "https://h:port"])
def test_client_bad_kme_url_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    auth = ["--cert", "a.pem", "--key", "a.key", "--ca", "ca.pem"]
    _fails(capsys, ["kms", "get-keys", "sae-b", "--kme", url, *auth], "--kme", repr(url))


@pytest.mark.parametrize(
    ("db", "needles"),
    [
        ("foo://bar", ["--db", "'foo://bar'", "sqlite:///PATH or postgresql://"]),
        ("not a url", ["--db", "'not a url'", "sqlite:///PATH or postgresql://"]),
        ("sqlite:///{tmp}/no-dir/k.db", ["--db", "{tmp}/no-dir", "does not exist"]),
    ],
)
def test_import_keys_bad_db_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], db: str, needles: list[str]
) -> None:
    keys = _device_keys(tmp_path / "keys.txt")
    argv = ["kms", "import-keys", str(keys), "--db", db.format(tmp=tmp_path)]
    _fails(capsys, argv, *(n.format(tmp=tmp_path) for n in needles))


def test_import_keys_bad_db_in_subprocess(tmp_path: Path) -> None:
    """The issue's case, as a real process (a SQLAlchemy traceback before)."""
    keys = _device_keys(tmp_path / "keys.txt")
    _fails_in_subprocess(["kms", "import-keys", str(keys), "--db", "foo://bar"], "'foo://bar'")


def test_import_keys_missing_or_bad_file_creates_no_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    missing = tmp_path / "missing.txt"
    _fails(capsys, ["kms", "import-keys", str(missing), "--db", db], str(missing))
    bad = tmp_path / "bad.txt"
    bad.write_text("not a key line\n")
    _fails(capsys, ["kms", "import-keys", str(bad), "--db", db], f"{bad}:1")
    assert not (tmp_path / "k.db").exists()


def test_dev_pair_missing_or_bad_import_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.txt"
    argv = ["kms", "dev-pair", str(tmp_path / "pair"), "--import-keys"]
    _fails(capsys, [*argv, str(missing)], "--import-keys", str(missing))
    bad = tmp_path / "bad.txt"
    bad.write_text("not a key line\n")
    _fails(capsys, [*argv, str(bad)], f"{bad}:1")
    assert not (tmp_path / "pair").exists()  # checked before the PKI is made


def test_dev_pair_bad_db_b_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["kms", "dev-pair", str(tmp_path / "pair"), "--db", f"sqlite:///{tmp_path}/a.db"]
    _fails(capsys, [*argv, "--db-b", "mysql://x/y"], "--db-b", "'mysql://x/y'", "sqlite:///")
    unopenable = f"sqlite:///{tmp_path}/no-dir/b.db"
    _fails(capsys, [*argv, "--db-b", unopenable], "--db-b", unopenable)


def test_dev_pair_port_in_use_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["kms", "dev-pair", str(tmp_path / "pair"), "--port-b", str(port)]
        _fails(capsys, argv, f"127.0.0.1:{port} is in use", "Address already in use")


def test_dev_pair_feed_none_holds_exactly_the_imported_keys(tmp_path: Path) -> None:
    from qkdtwin.kms import KeyStore
    from qkdtwin.kms.feeder import read_key_file

    imported = read_key_file(_device_keys(tmp_path / "keys.txt"))
    argv = ["--feed", "none", "--no-wrap", "--import-keys", str(tmp_path / "keys.txt")]
    with _run_dev_pair(tmp_path, *argv) as info:
        a = info["sae_a"]
        ca = Path(info["ca_cert"])
        with KmeClient(info["kme_a_url"], Path(a["cert"]), Path(a["key"]), ca) as kme_a:
            time.sleep(1.5)  # a feeder would have ticked (every 0.5 s) by now
            # kme-a may hand out the half of the keys it owns (the pool split)
            assert kme_a.status("sae-b")["stored_key_count"] == len(imported) // 2
        # --no-wrap: the stores hold the material itself
        stores = [KeyStore(f"sqlite:///{tmp_path / n}") for n in ("kme-a.db", "kme-b.db")]
        try:
            for store in stores:
                counts = store.counters()
                assert counts.available == counts.added_total == len(imported)
                for key_id, material in imported:
                    assert store.raw_material(key_id) == material
        finally:
            for store in stores:
                store.close()


def test_serve_bad_kme_field_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_serve_config(tmp_path)
    text = cfg.read_text().replace("kme: {kme_id: kme-a,", "kme: {kme_id: kme-a, key_size: 100,")
    cfg.write_text(text)
    _fails(capsys, ["kms", "serve", "--config", str(cfg)], "kme.key_size", "multiple of 8")
