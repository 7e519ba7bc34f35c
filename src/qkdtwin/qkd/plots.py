"""Figures of the QKD layer (matplotlib, non-interactive backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qkdtwin._plotting import save_figure, subplots

__all__ = ["plot_rate_curves"]


def plot_rate_curves(curves: list[dict[str, Any]], path: Path | str, *, title: str) -> Path:
    """Plot secret key rate (bits/pulse, log scale) against distance for several protocols.

    ``curves`` is the list produced by ``qkdtwin link rate``: each item has ``protocol`` and
    ``points`` with ``distance_km`` and ``rate_per_pulse``. Zero rates are left out of the log
    plot. The format follows the file suffix (``.png`` or ``.svg``).

    Raises
    ------
    ConfigError
        If the suffix is not .png, .svg or .pdf, or the file cannot be written.
    """
    fig, ax = subplots(figsize=(7.5, 5.0), dpi=120)
    for c in curves:
        xs = [p["distance_km"] for p in c["points"] if p["rate_per_pulse"] > 0]
        ys = [p["rate_per_pulse"] for p in c["points"] if p["rate_per_pulse"] > 0]
        style = {"color": "black", "linestyle": "--"} if c["protocol"] == "plob" else {}
        ax.semilogy(xs, ys, label=c["protocol"], **style)
    ax.set_xlabel("fibre length (km)")
    ax.set_ylabel("secret key rate (bits per pulse)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
