"""The CLI loads lazily: a command imports its own layer only, ``--help`` imports none.

Start-up time is what this protects (``benchmarks/cli_startup.py`` measures it): each layer's
sub-app, and with it the layer, is imported when one of its commands runs, and the root help
lists the sub-apps from a static table.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest
import typer

from qkdtwin.cli import COMMANDS, main
from qkdtwin.cli.options import Without, option_group, with_option_groups

#: Imported by no command that a test below runs: the upper layers and their web stacks.
HEAVY = ("qkdtwin.kms", "qkdtwin.twin", "qkdtwin.iot", "fastapi", "sqlalchemy")

_CHILD = """
import json, sys
from qkdtwin.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def _child_modules(tmp_path: Path, *args: str) -> tuple[int, set[str], str]:
    """Run ``qkdtwin ARGS`` in a fresh interpreter; its exit code, its modules, its stdout."""
    report = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(report), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    return data["code"], set(data["modules"]), proc.stdout


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_root_help_imports_no_layer(tmp_path: Path) -> None:
    code, modules, out = _child_modules(tmp_path, "--help")
    assert code == 0
    assert all(name in out for name in COMMANDS)
    layers = ("qkdtwin.qkd", "qkdtwin.network", "qkdtwin.plant", "qkdtwin.teleport")
    assert _loaded(modules, HEAVY + layers) == []
    assert sorted(m for m in modules if m.startswith("qkdtwin.cli.")) == [
        "qkdtwin.cli.common",
        "qkdtwin.cli.lazy",
    ]


def test_link_rate_imports_only_the_qkd_layer(tmp_path: Path) -> None:
    args = ["link", "rate", "--protocol", "decoy-bb84", "--distance-km", "50", "--preset", "gys"]
    code, modules, out = _child_modules(tmp_path, *args, "--json")
    assert code == 0
    assert json.loads(out)["points"][0]["rate_per_pulse"] > 0
    others = ("qkdtwin.network", "qkdtwin.plant", "qkdtwin.teleport", "qkdtwin.interfaces")
    assert _loaded(modules, HEAVY + others) == []
    cli = {m for m in modules if m.startswith("qkdtwin.cli.")}
    assert cli <= {
        f"qkdtwin.cli.{m}" for m in ("common", "lazy", "options", "link", "link_options")
    }
    # the rate needs neither the pulse-by-pulse engine nor scipy.stats
    assert _loaded(modules, ("qkdtwin.qkd.link", "qkdtwin.qkd.attacks", "scipy.stats")) == []


def test_the_static_help_table_is_each_sub_apps_own_help() -> None:
    from typer.main import get_command

    from qkdtwin.cli import app

    root = get_command(app)
    for name, spec in COMMANDS.items():
        assert root.commands[name].help == spec.help, name


@pytest.mark.parametrize("group", sorted(COMMANDS))
def test_every_command_of_a_group_is_listed_in_its_help(capsys, group: str) -> None:
    from typer.main import get_command

    from qkdtwin.cli import app

    sub = get_command(app).commands[group]
    assert main([group, "--help"]) == 0
    out = capsys.readouterr().out
    names = sub.list_commands(None)  # type: ignore[attr-defined]
    assert names
    assert all(name in out for name in names), (group, names)


def test_root_help_lists_every_group_with_its_help(capsys) -> None:
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, spec in COMMANDS.items():
        assert name in out
        assert spec.help.split()[0] in out


def test_a_mistyped_group_is_one_line_with_a_suggestion(capsys) -> None:
    assert main(["lnk"]) == 2
    err = capsys.readouterr().err
    assert err == "qkdtwin: error: No such command 'lnk'. Did you mean 'link'?\n"


def test_qkd_package_resolves_every_public_name_lazily() -> None:
    import qkdtwin.qkd as qkd

    assert set(qkd._MODULE_OF) == set(qkd.__all__)
    assert qkd.keyrate.analytic_key_rate is qkd.analytic_key_rate
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = qkd.nope


@option_group
@dataclass(frozen=True)
class _Pair:
    a: Annotated[int, typer.Option("--a")] = 1
    b: Annotated[int, typer.Option("--b")] = 2


_PAIR = _Pair()


def test_option_groups_expand_into_options_and_refuse_clashes() -> None:
    seen = []

    @with_option_groups
    def cmd(x: int = 0, pair: Annotated[_Pair, Without("b")] = _PAIR) -> None:
        seen.append((x, pair))

    assert list(inspect.signature(cmd).parameters) == ["x", "a"]
    cmd(x=3, a=5)
    assert seen == [(3, _Pair(a=5, b=2))]

    def clash(a: int = 0, pair: _Pair = _PAIR) -> None: ...

    with pytest.raises(TypeError, match="clash"):
        with_option_groups(clash)

    def unknown(pair: Annotated[_Pair, Without("c")] = _PAIR) -> None: ...

    with pytest.raises(TypeError, match="no field"):
        with_option_groups(unknown)
