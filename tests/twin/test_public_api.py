from __future__ import annotations

import qkdtwin.twin


def test_twin_exports():
    api = qkdtwin.twin
    assert api.__all__ == sorted(api.__all__, key=lambda s: (not s.isupper(), s))
    for name in api.__all__:
        assert hasattr(api, name), name
    assert {
        "Twin",
        "create_twin_app",
        "load_twin_scenario",
        "what_if",
        "windowed_qber",
        "ServiceThread",
        "run_tour",
        "AttachedTwin",
        "AttachedRunner",
        "LinkEstimator",
        "LinkDetector",
        "load_attach_file",
        "replay",
    } <= set(api.__all__)


def test_cli_has_twin_commands():
    from typer.main import get_command

    from qkdtwin.cli import app

    twin = get_command(app).commands["twin"]
    assert set(twin.commands) == {
        "serve",
        "attack",
        "clear",
        "what-if",
        "state",
        "demo",
        "attach-demo",
    }
