"""``qkdtwin postprocess``: the classical post-processing on its own.

* ``postprocess bench`` — Cascade reconciliation of synthetic frames: efficiency, frame error
  rate and throughput of each variant.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import typer

from qkdtwin.cli.common import JsonOpt, emit_json
from qkdtwin.errors import ConfigError

__all__ = ["post_app"]

post_app = typer.Typer(
    help="Classical post-processing: Cascade reconciliation.", no_args_is_help=True
)


@post_app.command("bench")
def postprocess_bench(
    frame_bits: Annotated[int, typer.Option("--frame-bits", help="Frame size (bits).")] = 100_000,
    qber: Annotated[float, typer.Option("--qber", help="Error rate of the frames.")] = 0.02,
    variant: Annotated[
        str, typer.Option("--reconciliation", help="Cascade variant or 'all'.")
    ] = "all",
    frames: Annotated[int, typer.Option("--frames", help="Frames per variant.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Reconcile synthetic frames (binary symmetric errors) and report f, FER, throughput."""
    import time as _time

    from qkdtwin.qkd.postprocess import CASCADE_VARIANTS, reconcile
    from qkdtwin.qkd.postprocess.finite_key import h2

    if not 0.0 < qber < 0.5:
        raise ConfigError(
            f"qber must be in (0, 0.5), got {qber}", field="qber", value=qber, allowed="(0, 0.5)"
        )
    if frame_bits < 64 or frames < 1:
        raise ConfigError("frame_bits must be >= 64 and frames >= 1", field="frame_bits")
    names = list(CASCADE_VARIANTS) if variant == "all" else [variant]
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for name in names:
        leaked = failed = 0
        errors_total = 0
        elapsed = 0.0
        for _ in range(frames):
            a = rng.integers(0, 2, frame_bits, dtype=np.uint8)
            flips = rng.random(frame_bits) < qber
            b = a ^ flips.astype(np.uint8)
            errors_total += int(flips.sum())
            t = _time.perf_counter()
            res = reconcile(a, b, qber, variant=name, rng=rng)
            elapsed += _time.perf_counter() - t
            leaked += res.leaked_bits
            failed += int(not np.array_equal(res.corrected, a))
        q_true = errors_total / (frames * frame_bits)
        rows.append(
            {
                "reconciliation": name,
                "frame_bits": frame_bits,
                "qber": qber,
                "frames": frames,
                "efficiency": leaked / (frames * frame_bits * h2(q_true)) if q_true > 0 else None,
                "frame_error_rate": failed / frames,
                "bits_per_s": frames * frame_bits / elapsed if elapsed > 0 else None,
            }
        )
    if as_json:
        emit_json({"results": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "variant",
        "f",
        "FER",
        "Mbit/s",
        title=f"Cascade, {frame_bits} bits, QBER {qber:g}, {frames} frames",
    )
    for r in rows:
        eff, bps = r["efficiency"], r["bits_per_s"]
        table.add_row(
            r["reconciliation"],
            f"{eff:.4f}" if eff else "-",
            f"{r['frame_error_rate']:.3f}",
            f"{bps / 1e6:.2f}" if bps else "-",
        )
    Console().print(table)
