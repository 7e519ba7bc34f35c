"""The ``qkdtwin`` command line.

Every computing command has ``--json`` (one JSON object on stdout and nothing else). Errors in
user input print one line on stderr and exit with status 2 — the mapping from exceptions to
exit codes lives in :func:`main` and nowhere else.

One module per layer (:mod:`qkdtwin.cli.link`, :mod:`~qkdtwin.cli.kms`, ...), each imported
only when one of its commands runs (:mod:`qkdtwin.cli.lazy`): ``qkdtwin --help`` imports no
layer, ``qkdtwin link rate`` only the QKD layer.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from qkdtwin.cli import common as _common  # noqa: F401  (its help tweak applies to --version)
from qkdtwin.cli.lazy import LazyCommand, LazyGroup
from qkdtwin.errors import QkdTwinError

__all__ = ["COMMANDS", "EXIT_USAGE", "app", "entry_point", "main"]

#: The command groups in ``--help`` order: where each Typer app lives and its help, which
#: ``qkdtwin --help`` lists without importing the layer (tests/test_cli_lazy.py checks that
#: it is each app's own help).
COMMANDS = {
    "link": LazyCommand(
        "qkdtwin.cli.link:link_app",
        "QKD links: pulse-by-pulse simulation, analytic key rates, maximum distance.",
    ),
    "teleport": LazyCommand(
        "qkdtwin.cli.teleport:teleport_app",
        "Controlled two-qubit teleportation (GHZ5 + Bell channel) and its decoy-photon check.",
    ),
    "network": LazyCommand(
        "qkdtwin.cli.network:network_app",
        "Key network twin: key pools, trusted relays, allocation policies.",
    ),
    "reproduce": LazyCommand(
        "qkdtwin.cli.network:reproduce_app",
        "Reproduce the seed paper's figures (success rate vs load).",
    ),
    "kms": LazyCommand(
        "qkdtwin.cli.kms:kms_app", "Key management (ETSI GS QKD 014 KMEs over mutual TLS)."
    ),
    "iot": LazyCommand(
        "qkdtwin.cli.iot:iot_app",
        "Quantum-secured IIoT telemetry (hybrid QKD + ML-KEM keys over MQTT).",
    ),
    "twin": LazyCommand(
        "qkdtwin.cli.twin:twin_app", "The live digital twin: service, dashboard, attacks, what-if."
    ),
    "plant": LazyCommand(
        "qkdtwin.cli.plant:plant_app",
        "The plant: a stand-in for the QKD-secured IIoT network an operator owns.",
    ),
    "postprocess": LazyCommand(
        "qkdtwin.cli.postprocess:post_app", "Classical post-processing: Cascade reconciliation."
    ),
}


class _RootGroup(LazyGroup):
    lazy_commands = COMMANDS


app = typer.Typer(
    name="qkdtwin",
    help="Digital twin of a quantum-secured industrial IoT network.",
    cls=_RootGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_USAGE = 2


def _version_callback(value: bool) -> None:
    if value:
        from qkdtwin import __version__  # read from the metadata only here

        typer.echo(f"qkdtwin {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Show the version and exit.",
            is_eager=True,
            callback=_version_callback,
        ),
    ] = False,
) -> None:
    """Digital twin of a quantum-secured industrial IoT network."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every qkdtwin and usage error to one stderr line and exit code 2."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="qkdtwin", standalone_mode=False)
    except QkdTwinError as exc:
        sys.stderr.write(f"qkdtwin: error: {exc}\n")
        return EXIT_USAGE
    except ModuleNotFoundError as exc:  # an optional dependency a command reached lazily
        from qkdtwin.extras import extra_for_module

        extra = extra_for_module(exc.name)
        if extra is None:
            raise
        sys.stderr.write(
            f"qkdtwin: error: this command needs the optional dependency {exc.name!r}: "
            f"pip install 'qkdtwin[{extra}]' (or 'qkdtwin[all]')\n"
        )
        return EXIT_USAGE
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.TyperException as exc:  # usage errors (unknown option, bad integer, ...)
        sys.stderr.write(f"qkdtwin: error: {exc.format_message()}\n")
        return EXIT_USAGE
    except typer.Abort:
        sys.stderr.write("qkdtwin: aborted\n")
        return 130
    return 0


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
