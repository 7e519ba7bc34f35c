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
from typing import Any

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

    def seed_rows(self, base_seed: int = 0) -> list[dict[str, Any]]:
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

    def row(self) -> dict[str, Any]:
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


def write_figure(points: list[FigurePoint], out_dir: Path, figure: str) -> dict[str, str]:
    """Write ``{figure}.csv``, ``{figure}_seeds.csv`` and ``{figure}.png`` into ``out_dir``.

    ``{figure}.csv`` holds the means and confidence intervals, ``{figure}_seeds.csv`` every
    run's success rate (the same arrivals per run for every policy: paired), the PNG one panel
    per policy.

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
    policies = list(dict.fromkeys(p.policy for p in points))
    values = list(dict.fromkeys(p.value for p in points))
    param = points[0].param
    fig, axes = subplots(1, len(policies), figsize=(4.0 * len(policies), 3.6), sharey=True)
    axes_list = list(np.atleast_1d(axes))
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for ax, pol in zip(axes_list, policies, strict=True):
        for i, val in enumerate(values):
            pts = [p for p in points if p.policy == pol and p.value == val]
            x = [p.load for p in pts]
            color = cmap(i / max(len(values) - 1, 1))
            ax.plot(x, [p.mean for p in pts], "o-", ms=3, color=color, label=f"{param}={val:g}")
            ax.fill_between(
                x, [p.ci_low for p in pts], [p.ci_high for p in pts], color=color, alpha=0.2
            )
        ax.set_title(pol)
        ax.set_xlabel("load (requests per 1000 time units)")
        ax.grid(alpha=0.3)
    axes_list[0].set_ylabel("service success rate")
    axes_list[-1].legend(fontsize=8)
    fig.suptitle(f"{figure}: success rate vs load (95 % CI over {points[0].seeds} seeds)")
    png_path = save_figure(fig, out_dir / f"{figure}.png", dpi=110)
    out = {"csv": str(csv_path), "png": str(png_path)}
    if seed_rows:
        out["seeds_csv"] = str(seeds_path)
    return out
