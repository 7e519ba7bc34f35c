"""The lean core: the numerical layers work without any extra, and a missing extra is named.

Each case runs in a child interpreter whose import system refuses the modules of the extras
(a meta-path finder raising ``ModuleNotFoundError``, as for a package that is not installed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qkdtwin.extras import EXTRAS, MissingExtraError, extra_for_module, require_extra

pytestmark = pytest.mark.e2e  # child interpreters

ALL_EXTRA_MODULES = sorted({m for mods in EXTRAS.values() for m in mods})


def _run(
    code: str, blocked: list[str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    prelude = textwrap.dedent(
        f"""
        import sys
        BLOCKED = {blocked!r}

        class _NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, _NotInstalled())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_the_numerical_layers_need_no_extra() -> None:
    """Without any extra: the QKD, network and teleport layers import and compute, and the CLI
    computes a key rate."""
    res = _run(
        """
        import json
        import qkdtwin.qkd, qkdtwin.network, qkdtwin.teleport
        from qkdtwin.cli import main
        sys.exit(main(["link", "rate", "--protocol", "decoy-bb84", "--distance-km", "50",
                       "--preset", "gys", "--json"]))
        """,
        ALL_EXTRA_MODULES,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["points"][0]["rate_bps"] > 0


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["kms", "serve", "--config", "kme.yaml"], "kms"),
        (["twin", "serve", "--duration", "1"], "kms"),
        (["iot", "run", "--devices", "1"], "kms"),
    ],
)
def test_a_command_without_its_extra_says_which_in_one_line(argv: list[str], extra: str) -> None:
    res = _run(
        f"""
        from qkdtwin.cli import main
        sys.exit(main({argv!r}))
        """,
        ALL_EXTRA_MODULES,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"pip install 'qkdtwin[{extra}]'" in lines[0]
    assert "Traceback" not in res.stderr


def test_the_plots_extra_is_named_too(tmp_path: Path) -> None:
    """A dependency reached lazily inside a command (matplotlib for a plot) is mapped to its
    extra by the CLI, and nothing is written."""
    res = _run(
        """
        from qkdtwin.cli import main
        sys.exit(main(["link", "rate", "--protocol", "bb84", "--distance-km", "10",
                       "--plot", "out.png"]))
        """,
        ["matplotlib"],
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    assert not (tmp_path / "out.png").exists()
    assert "pip install 'qkdtwin[plots]'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_require_extra_and_the_module_map(monkeypatch: pytest.MonkeyPatch) -> None:
    require_extra("kms", what="this test")  # installed here: no error
    monkeypatch.setitem(EXTRAS, "kms", (*EXTRAS["kms"], "no_such_module_anywhere"))
    with pytest.raises(MissingExtraError, match=r"qkdtwin\[kms\]") as err:
        require_extra("kms", what="this test")
    assert err.value.module == "no_such_module_anywhere"
    assert isinstance(err.value, ImportError)
    assert extra_for_module("google.protobuf.message") == "sparkplug"
    assert extra_for_module("psycopg") == "postgres"
    assert extra_for_module("numpy") is None
