r"""Figures of the teleportation layer (matplotlib, non-interactive backend).

The PNGs in ``docs/img/`` are made by :func:`write_doc_figures`::

    .venv/bin/python -c "from qkdtwin.teleport.plots import write_doc_figures; \\
        write_doc_figures('docs/img')"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qkdtwin._plotting import save_figure, subplots

__all__ = [
    "CLASSICAL_FIDELITY_LIMIT",
    "plot_detection",
    "plot_fidelity_run",
    "plot_noise_sweep",
    "write_doc_figures",
]

#: Best average fidelity of a measure-and-prepare (classical) scheme for d = 4: 2/(d + 1).
CLASSICAL_FIDELITY_LIMIT = 2.0 / 5.0


def _figure(ncols: int = 1) -> tuple[Any, Any]:
    return subplots(1, ncols, figsize=(6.4 * ncols, 4.2), dpi=100)


def _save(fig: Any, path: Path | str) -> Path:
    return save_figure(fig, path)


def _reference_lines(ax: Any) -> None:
    ax.axhline(
        0.6, color="grey", linestyle="--", linewidth=1, label="no controller, noise-free (3/5)"
    )
    ax.axhline(
        CLASSICAL_FIDELITY_LIMIT,
        color="black",
        linestyle=":",
        linewidth=1,
        label="classical limit 2/(d+1) = 2/5",
    )


def plot_noise_sweep(
    curves: Sequence[Mapping[str, Any]], path: Path | str, *, title: str, marker: Any = None
) -> Path:
    """Plot mean fidelity against noise strength, one line per noise model.

    Parameters
    ----------
    curves
        As returned by :func:`qkdtwin.teleport.noise_sweep`.
    path
        ``.png`` or ``.svg`` file to write.
    title
        Figure title.
    marker
        Optional ``(strength, fidelity, stderr, label)`` of a Monte Carlo point to overlay.

    Raises
    ------
    ConfigError
        If the suffix is not .png, .svg or .pdf, or the file cannot be written.
    """
    fig, ax = _figure()
    _draw_sweep(ax, curves, marker)
    ax.set_title(title)
    return _save(fig, path)


def _draw_sweep(ax: Any, curves: Sequence[Mapping[str, Any]], marker: Any) -> None:
    for c in curves:
        xs = [p["strength"] for p in c["points"]]
        ys = [p["fidelity"] for p in c["points"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=c["model"])
    if marker is not None:
        x, y, err, label = marker
        ax.errorbar([x], [y], yerr=[2 * err], fmt="s", color="red", capsize=3, label=label)
    _reference_lines(ax)
    ax.set_xlabel("noise strength p on each channel particle")
    ax.set_ylabel("mean fidelity (Haar-random messages)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_fidelity_run(
    fidelities: Sequence[float],
    path: Path | str,
    *,
    title: str,
    expected: float | None = None,
    sweep: Sequence[Mapping[str, Any]] | None = None,
    marker: Any = None,
) -> Path:
    """Histogram of per-trial fidelities; with ``sweep``, a second panel of fidelity vs noise.

    Raises
    ------
    ConfigError
        If the suffix is not .png, .svg or .pdf, or the file cannot be written.
    """
    fig, axes = _figure(2 if sweep else 1)
    ax = axes[0] if sweep else axes
    f = np.asarray(fidelities, dtype=float)
    ax.hist(f, bins=40, range=(0.0, 1.0), color="tab:blue", alpha=0.8)
    ax.axvline(float(f.mean()), color="tab:red", label=f"mean {f.mean():.4f}")
    if expected is not None:
        ax.axvline(expected, color="black", linestyle="--", label=f"exact {expected:.4f}")
    ax.set_xlabel("fidelity of Bob's state with the message")
    ax.set_ylabel("trials")
    ax.set_title(title)
    ax.legend(fontsize=8)
    if sweep:
        _draw_sweep(axes[1], sweep, marker)
        axes[1].set_title("exact mean fidelity vs noise")
    return _save(fig, path)


def plot_detection(points: Sequence[Mapping[str, Any]], path: Path | str, *, title: str) -> Path:
    """Plot detection probability against the number of decoys: simulated, derived, paper.

    ``points`` are the ``to_dict()`` forms of
    :class:`~qkdtwin.teleport.decoy.DetectionEstimate` (keys ``decoys``,
    ``detection_probability``, ``stderr``, ``analytic``, ``paper``).

    Raises
    ------
    ConfigError
        If the suffix is not .png, .svg or .pdf, or the file cannot be written.
    """
    fig, ax = _figure()
    s = [p["decoys"] for p in points]
    ax.errorbar(
        s,
        [p["detection_probability"] for p in points],
        yerr=[2 * p["stderr"] for p in points],
        fmt="o",
        capsize=3,
        label="simulated (±2σ)",
    )
    ax.plot(s, [p["analytic"] for p in points], "-", label="derived 1 - (1 - e)^S")
    if all("paper" in p for p in points):
        ax.plot(s, [p["paper"] for p in points], "--", color="grey", label="paper 1 - (25%)^S")
    ax.set_xlabel("number of decoy photons S")
    ax.set_ylabel("probability that Eve is detected")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_doc_figures(outdir: Path | str, *, seed: int = 1) -> list[Path]:
    """Write the figures of ``docs/teleport.md`` into ``outdir``.

    ``teleport_noise.png`` (exact fidelity vs noise, with and without Charlie) and
    ``teleport_decoys.png`` (detection probability vs S, 20 000 rounds per point).
    """
    from qkdtwin.teleport.controlled import noise_sweep
    from qkdtwin.teleport.decoy import detection_curve

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    strengths = np.linspace(0.0, 1.0, 11).tolist()
    curves = noise_sweep(strengths)
    free = noise_sweep(strengths, controller=False)
    fig, axes = _figure(2)
    _draw_sweep(axes[0], curves, None)
    axes[0].set_title("with Charlie's result")
    _draw_sweep(axes[1], free, None)
    axes[1].set_title("Charlie withholds his result")
    paths = [_save(fig, out / "teleport_noise.png")]
    rng = np.random.default_rng(seed)
    points = [e.to_dict() for e in detection_curve(range(0, 21), 20_000, rng)]
    paths.append(
        plot_detection(
            points,
            out / "teleport_decoys.png",
            title="Decoy check against intercept-resend (random basis)",
        )
    )
    return paths
