"""Key import from device key files (``KEY_ID HEX`` lines, as ``link simulate --keys-out``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qkdtwin.cli import main
from qkdtwin.errors import ConfigError
from qkdtwin.kms import KeyStore
from qkdtwin.kms.feeder import import_key_file, read_key_file
from qkdtwin.qkd.postprocess.pipeline import write_keys


def _key_file(path: Path, n_keys: int = 5) -> Path:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, 256 * n_keys, dtype=np.uint8)
    assert write_keys(path, bits, np.random.default_rng(8), 256) == n_keys
    return path


def test_read_key_file_round_trips_writer(tmp_path: Path) -> None:
    keys = read_key_file(_key_file(tmp_path / "keys.txt"))
    assert len(keys) == 5
    assert all(len(m) == 32 for _, m in keys)


def test_import_same_keys_into_both_ends(tmp_path: Path) -> None:
    f = _key_file(tmp_path / "keys.txt")
    a = KeyStore(f"sqlite:///{tmp_path / 'a.db'}")
    b = KeyStore(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        assert import_key_file([a, b], f) == 5
        ka = a.reserve("sae-a", ["sae-b"], 5, 256)
        kb = b.reserve("sae-b", ["sae-a"], 5, 256)
        assert ka == kb
        assert {k.key_id for k in ka} == {k for k, _ in read_key_file(f)}
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    "line",
    [
        "not-a-uuid 00ff",
        "6f1c2b0e-3f7a-4c6e-9d1e-2b7f3c4d5e6f zz",
        "6f1c2b0e-3f7a-4c6e-9d1e-2b7f3c4d5e6f",
    ],
)
def test_malformed_line_rejected_with_line_number(tmp_path: Path, line: str) -> None:
    f = tmp_path / "bad.txt"
    f.write_text(f"# header\n{line}\n")
    with pytest.raises(ConfigError, match=":2:"):
        read_key_file(f)


def test_duplicate_key_id_rejected(tmp_path: Path) -> None:
    f = tmp_path / "dup.txt"
    f.write_text(
        "6f1c2b0e-3f7a-4c6e-9d1e-2b7f3c4d5e6f 00\n6f1c2b0e-3f7a-4c6e-9d1e-2b7f3c4d5e6f 01\n"
    )
    with pytest.raises(ConfigError, match="duplicate"):
        read_key_file(f)


def test_cli_import_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _key_file(tmp_path / "keys.txt", 3)
    urls = [f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"]
    args = ["kms", "import-keys", str(f), "--db", urls[0], "--db", urls[1], "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == {"imported": 3}
    for u in urls:
        s = KeyStore(u)
        assert s.available_count() == 3
        s.close()
    (tmp_path / "bad.txt").write_text("x y\n")
    assert main(["kms", "import-keys", str(tmp_path / "bad.txt"), "--db", urls[0]]) == 2
