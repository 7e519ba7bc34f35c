"""Reproduce the seed paper's Figures 4 and 5: service success rate against load.

Setting (the paper's, with the readings of ``docs/reproduction.md``): the seed topology (three
metro nodes, one OLT each, two edge gateways per OLT), services uniform over the 15 gateway
pairs (3 intra-OLT pools with one relay, 12 cross-OLT pools with several), ``X = 10`` keys per
service, every pool starting full. **Load** is the expected number of service requests in an
observation window of ``T = 1000`` time units (Poisson arrivals at total rate ``load / T``),
and ``V`` is the OLT's total key rate in keys per time unit. The success rate of a run is
served over requested services in the window.

Figure 4: ``C = 200..1000`` (step 200) at ``V = 2``. Figure 5: ``V = 1..6`` at ``C = 200``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from qkdtwin._plotting import save_figure, subplots
from qkdtwin.errors import ConfigError
from qkdtwin.network.engine import simulate, uniform_demands
from qkdtwin.network.policies import POLICIES
from qkdtwin.network.relay import relay_costs
from qkdtwin.network.topology import seed_topology

__all__ = ["FIGURES", "FigurePoint", "reproduce_figure", "write_figure"]

WINDOW = 1000.0
LOADS = tuple(float(x) for x in range(100, 1001, 100))
FIGURES: dict[str, dict[str, Any]] = {
    "fig4": {"param": "C", "values": (200, 400, 600, 800, 1000), "C": None, "V": 2.0},
    "fig5": {"param": "V", "values": (1, 2, 3, 4, 5, 6), "C": 200.0, "V": None},
}


class FigureRow(TypedDict):
    """One point of a figure as a CSV/JSON row (:meth:`FigurePoint.row`)."""

    figure: str
    param: str
    value: float
    load: float
    policy: str
    success_rate: float
    ci_low: float
    ci_high: float
    seeds: int


class SeedRow(TypedDict):
    """One run behind a point, as a CSV row (:meth:`FigurePoint.seed_rows`)."""

    figure: str
    param: str
    value: float
    load: float
    policy: str
    run: int
    #: The run's generator seed, ``"[base_seed, run]"``.
    rng_seed: str
    success_rate: float


@dataclass(frozen=True)
class FigurePoint:
    """Mean success rate over seeds at one (parameter, load, policy), with a 95 % CI."""

    figure: str
    param: str
    value: float
    load: float
    policy: str
    mean: float
    ci_low: float
    ci_high: float
    seeds: int
    #: The success rate of each run, run ``k`` seeded ``default_rng([seed, k])``.
    runs: tuple[float, ...] = ()

    def seed_rows(self, base_seed: int = 0) -> list[SeedRow]:
        """One CSV row per run (``{figure}_seeds.csv``): the data behind the mean and its CI."""
        return [
            {
                "figure": self.figure,
                "param": self.param,
                "value": self.value,
                "load": self.load,
                "policy": self.policy,
                "run": k,
                "rng_seed": f"[{base_seed}, {k}]",
                "success_rate": round(r, 6),
            }
            for k, r in enumerate(self.runs)
        ]

    def row(self) -> FigureRow:
        """CSV/JSON row."""
        return {
            "figure": self.figure,
            "param": self.param,
            "value": self.value,
            "load": self.load,
            "policy": self.policy,
            "success_rate": round(self.mean, 6),
            "ci_low": round(self.ci_low, 6),
            "ci_high": round(self.ci_high, 6),
            "seeds": self.seeds,
        }


def _ci(values: Sequence[float]) -> tuple[float, float, float]:
    from scipy.stats import t as student_t

    a = np.asarray(values, dtype=np.float64)
    m = float(a.mean())
    if a.size < 2:
        return m, m, m
    half = float(student_t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return m, m - half, m + half


def reproduce_figure(
    figure: str,
    *,
    seeds: int = 10,
    loads: Sequence[float] = LOADS,
    policies: Sequence[str] = tuple(POLICIES),
    keys_per_service: float = 10.0,
    window: float = WINDOW,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[FigurePoint]:
    """Success rate vs load for every curve of ``figure`` and every policy.

    Parameters
    ----------
    figure
        ``fig4`` or ``fig5``.
    seeds
        Independent runs per point (confidence interval: Student t, 95 %).
    loads
        Expected requests per window.
    policies
        Policy names.
    keys_per_service
        ``X``.
    window
        ``T``, time units.
    seed
        Base seed; run ``k`` of a point uses ``default_rng([seed, k])`` for every policy (common
        random numbers, so policies are compared on the same arrivals).
    progress
        Called with (done, total) after each point.

    Raises
    ------
    ConfigError
        On an unknown figure or a bad count.
    """
    if figure not in FIGURES:
        raise ConfigError(f"unknown figure {figure!r}; known: {', '.join(FIGURES)}", field="figure")
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}", field="seeds", value=seeds)
    spec = FIGURES[figure]
    total = len(spec["values"]) * len(loads) * len(policies)
    done = 0
    out: list[FigurePoint] = []
    for value in spec["values"]:
        c = float(value) if spec["param"] == "C" else float(spec["C"])
        v = float(value) if spec["param"] == "V" else float(spec["V"])
        topo = seed_topology(olt_rate=v)
        base = uniform_demands(topo, 1.0)
        costs = relay_costs(topo, [(d.src, d.dst) for d in base])
        for load in loads:
            demands = uniform_demands(topo, load / window)
            for pol in policies:
                rates = [
                    simulate(
                        topo,
                        demands,
                        pool_capacity=c,
                        keys_per_service=keys_per_service,
                        policy=pol,
                        rng=np.random.default_rng([seed, k]),
                        duration=window,
                        costs=costs,
                    ).success_rate
                    for k in range(seeds)
                ]
                rates = [r if math.isfinite(r) else 1.0 for r in rates]
                m, lo, hi = _ci(rates)
                out.append(
                    FigurePoint(
                        figure, spec["param"], float(value), load, pol, m, lo, hi, seeds,
                        tuple(rates),
                    )
                )  # fmt: skip
                done += 1
                if progress is not None:
                    progress(done, total)
    return out


def _paired_diff(a: FigurePoint, b: FigurePoint) -> tuple[float, float, float]:
    """Mean of the per-run differences ``a - b`` (same arrivals per run) and its 95 % CI."""
    if a.runs and len(a.runs) == len(b.runs):
        return _ci([x - y for x, y in zip(a.runs, b.runs, strict=True)])
    d = a.mean - b.mean
    return d, d, d


def _paper_figure(points: list[FigurePoint], figure: str) -> Any:
    """Draw the figure for a paper: one column per curve value, policies overlaid.

    Each column shows the policies with 95 % bands, and below them each policy's paired
    difference to the static split (percentage points), so sub-point gaps are visible.
    """
    from matplotlib import colormaps

    policies = list(dict.fromkeys(p.policy for p in points))
    values = list(dict.fromkeys(p.value for p in points))
    param = points[0].param
    cols = len(values)
    fig, axes = subplots(
        2, cols, figsize=(2.9 * cols, 5.6), sharex=True, sharey="row",
        gridspec_kw={"height_ratios": [3, 2]},
    )  # fmt: skip
    axes = np.atleast_2d(axes).reshape(2, cols)
    colors = colormaps["tab10"]
    at = {(p.policy, p.value, p.load): p for p in points}
    for c, val in enumerate(values):
        top, bottom = axes[0, c], axes[1, c]
        for k, pol in enumerate(policies):
            pts = sorted((p for p in points if p.policy == pol and p.value == val),
                         key=lambda p: p.load)  # fmt: skip
            x = [p.load for p in pts]
            color = colors(k % 10)
            top.plot(x, [p.mean for p in pts], "o-", ms=2.5, lw=1.2, color=color, label=pol)
            top.fill_between(x, [p.ci_low for p in pts], [p.ci_high for p in pts],
                             color=color, alpha=0.15)  # fmt: skip
            if "static" in policies and pol != "static":
                diffs = [_paired_diff(p, at[("static", val, p.load)]) for p in pts]
                bottom.plot(x, [100 * d[0] for d in diffs], "o-", ms=2.5, lw=1.2, color=color)
                bottom.fill_between(x, [100 * d[1] for d in diffs], [100 * d[2] for d in diffs],
                                    color=color, alpha=0.15)  # fmt: skip
        top.set_title(f"{param} = {val:g}")
        top.grid(alpha=0.3)
        bottom.axhline(0.0, color="black", lw=0.8)
        bottom.grid(alpha=0.3)
        bottom.set_xlabel("load (requests per 1000 time units)")
    axes[0, 0].set_ylabel("service success rate")
    axes[1, 0].set_ylabel("minus static (pp)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(policies), fontsize=8,
               frameon=False)  # fmt: skip
    seeds = points[0].seeds
    fig.suptitle(
        f"{figure}: service success rate vs load, every policy (95 % bands over {seeds} "
        "seeds); below: paired difference to the static split"
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return fig


def write_figure(points: list[FigurePoint], out_dir: Path, figure: str) -> dict[str, str]:
    """Write ``{figure}.csv``, ``{figure}_seeds.csv``, ``{figure}.png`` and ``.pdf``.

    ``{figure}.csv`` holds the means and confidence intervals, ``{figure}_seeds.csv`` every
    run's success rate (the same arrivals per run for every policy: paired), the figure (PNG
    and PDF) one column per curve value with the policies overlaid and their paired differences
    to the static split below.

    Raises
    ------
    ConfigError
        If the directory cannot be created or written.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path = out_dir / f"{figure}.csv"
        with csv_path.open("w", newline="") as fh:
            rows = [p.row() for p in points]
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        seed_rows = [r for p in points for r in p.seed_rows()]
        seeds_path = out_dir / f"{figure}_seeds.csv"
        if seed_rows:  # the per-run data behind every mean, for paired analyses
            with seeds_path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(seed_rows[0]))
                writer.writeheader()
                writer.writerows(seed_rows)
    except OSError as exc:
        raise ConfigError(
            f"cannot write to {str(out_dir)!r}: {exc.strerror}", field="out", value=str(out_dir)
        ) from None
    fig = _paper_figure(points, figure)
    png_path = save_figure(fig, out_dir / f"{figure}.png", dpi=130, close=False, layout=False)
    pdf_path = save_figure(fig, out_dir / f"{figure}.pdf", layout=False)
    out = {"csv": str(csv_path), "png": str(png_path), "pdf": str(pdf_path)}
    if seed_rows:
        out["seeds_csv"] = str(seeds_path)
    return out
