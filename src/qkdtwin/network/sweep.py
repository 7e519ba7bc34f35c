"""Parameter sweeps over scenarios: a grid of values times seeds, resumable, in parallel.

A sweep file::

    base: scenario.yaml            # a scenario file (relative to the sweep file) or a mapping
    grid:                          # dotted paths into the scenario -> list of values
      pool_capacity: [200, 400, 600]
      policy: [static, adaptive-key-residue, ttd-balance]
      topology.params.olt_rate: [1, 2]
    seeds: 5                       # 1..5, or an explicit list [1, 7, 9]

Every combination of grid values and seeds is one point; the output CSV has one row per point,
keyed by ``point`` (a stable hash of the values and the seed), so a rerun skips the points that
are already in the file (resumable). Points run in a local process pool, or on an existing Dask
distributed cluster when a scheduler address is given (needs ``dask[distributed]``).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

import yaml

from qkdtwin.errors import ConfigError
from qkdtwin.network.scenario import load_scenario, run_scenario

__all__ = ["expand_sweep", "finished_points", "load_sweep", "run_point", "run_sweep"]


class Sweep(TypedDict):
    """A sweep as :func:`load_sweep` returns it: the base scenario inlined, seeds listed."""

    #: The base scenario (scenario file format), before the grid's values are set.
    base: dict[str, Any]
    #: Dotted path into the scenario -> the values it takes.
    grid: dict[str, list[Any]]
    seeds: list[int]


class SweepPoint(TypedDict):
    """One point of a sweep (:func:`expand_sweep`)."""

    #: Stable hash of the point's values and seed: its key in the results file.
    point: str
    seed: int
    #: Dotted path -> value, one entry per grid parameter.
    params: dict[str, Any]
    #: The point's scenario (scenario file format), validated.
    scenario: dict[str, Any]


#: Result columns after the point's ID, its seed and one column per grid parameter.
_RESULTS = ["services", "successes", "success_rate", "key_utilization", "elapsed_s"]


def _fields(sweep: Sweep) -> list[str]:
    """Return the CSV header: tidy, one column per grid parameter (its dotted path)."""
    return ["point", "seed", *sweep["grid"], *_RESULTS]


def _cell(value: Any) -> Any:
    """Return a parameter value as a CSV cell: a scalar as it is, anything else as JSON."""
    return value if isinstance(value, str | int | float | bool) else json.dumps(value)


def load_sweep(path: Path) -> Sweep:
    """Read a sweep file; the base scenario is resolved and inlined.

    Raises
    ------
    ConfigError
        If the file is unreadable or malformed (the message names the field).
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(
            f"cannot read sweep {str(path)!r}: {exc.strerror}", field="sweep"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"sweep {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}", field="sweep"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("a sweep must be a YAML mapping", field="sweep")
    unknown = set(data) - {"base", "grid", "seeds"}
    if unknown:
        raise ConfigError(f"unknown sweep field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
    base = data.get("base")
    if isinstance(base, str):
        base_path = (Path(path).parent / base).resolve()
        try:
            base = yaml.safe_load(base_path.read_text())
        except (OSError, yaml.YAMLError):
            raise ConfigError(f"cannot read base scenario {base!r}", field="base") from None
    if not isinstance(base, dict):
        raise ConfigError("base must be a scenario file name or mapping", field="base")
    grid = data.get("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError("grid must map dotted field names to non-empty lists", field="grid")
    seeds = data.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        seeds = list(range(1, seeds + 1))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError("seeds must be a count >= 1 or a list of integers", field="seeds")
    return {"base": base, "grid": grid, "seeds": seeds}


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"grid field {dotted!r} does not name a mapping", field="grid")
        node = nxt
    node[parts[-1]] = value


def expand_sweep(sweep: Sweep) -> list[SweepPoint]:
    """All points of a sweep: ``{point, seed, params, scenario}``, each scenario validated.

    Raises
    ------
    ConfigError
        If a point's scenario is invalid (the message names the field).
    """
    keys = list(sweep["grid"])
    points: list[SweepPoint] = []
    for values in itertools.product(*(sweep["grid"][k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        for seed in sweep["seeds"]:
            scen = copy.deepcopy(sweep["base"])
            for k, v in params.items():
                _set(scen, k, v)
            scen["seed"] = seed
            load_scenario(scen)
            ident = json.dumps({"params": params, "seed": seed}, sort_keys=True)
            points.append(
                {
                    "point": hashlib.sha256(ident.encode()).hexdigest()[:16],
                    "seed": seed,
                    "params": params,
                    "scenario": scen,
                }
            )
    return points


# a CSV row: besides the fixed columns, one column per grid parameter (named by its path)
def run_point(point: SweepPoint) -> dict[str, Any]:
    """Run one point and return its CSV row."""
    res = run_scenario(load_scenario(point["scenario"]))
    d = res.to_dict()
    return {
        "point": point["point"],
        "seed": point["seed"],
        **{k: _cell(v) for k, v in point["params"].items()},
        "services": d["services"],
        "successes": d["successes"],
        "success_rate": d["success_rate"],
        "key_utilization": d["key_utilization"],
        "elapsed_s": d["elapsed_s"],
    }


def _scan(sweep: Sweep, out: Path) -> tuple[set[str], int]:
    """Return the finished points of ``out`` and the byte length of its complete part.

    The complete part is the header and every row up to the last one that ends in a line
    break and has all the columns; what follows it (a row cut short when the writer was killed
    between a write and a flush, or a header cut short) is not finished and is cut off before
    the next append (:func:`run_sweep`).
    """
    fields = _fields(sweep)
    if not out.exists() or out.stat().st_size == 0:
        return set(), 0
    # byte offsets per record: the csv reader pulls one line at a time from this generator
    # until a record (a quoted field may span lines) is complete
    pos, line_end = 0, False

    def lines(fh: BinaryIO) -> Iterator[str]:
        nonlocal pos, line_end
        for raw in fh:
            pos += len(raw)
            line_end = raw.endswith(b"\n")
            yield raw.decode("utf-8", errors="replace")

    try:
        fh = out.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {str(out)!r}: {exc.strerror}", field="out") from None
    with fh:
        reader = csv.reader(lines(fh))
        header = next(reader, None)
        if pos == 0 or header is None:
            return set(), 0
        header_end, complete_header = pos, line_end
        if header != fields and not (
            not complete_header and ",".join(fields).startswith(",".join(header))
        ):
            raise ConfigError(
                f"{str(out)!r} has the columns {header}, this sweep writes "
                f"{fields}: another sweep or an older format; write to a new file",
                field="out",
            )
        if not complete_header:  # killed while writing the header: nothing is finished
            return set(), 0
        done: set[str] = set()
        good = header_end
        for row in reader:
            if len(row) == len(fields) and line_end:
                if row[0]:
                    done.add(row[0])
                good = pos
    return done, good


def finished_points(sweep: Sweep, out: Path) -> set[str]:
    """Return the points already in the results file ``out`` (empty if there is none).

    Only complete rows count: a last row cut short (the writer was killed between a write and
    a flush; it has fewer columns or no line break) is not finished, so its point runs again.

    Raises
    ------
    ConfigError
        If ``out`` has other columns than this sweep writes (another sweep, an older format):
        rows are never mixed.
    """
    return _scan(sweep, out)[0]


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    scheduler_timeout: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Run the points of ``sweep`` not yet in ``out`` and append their rows.

    Parameters
    ----------
    sweep
        A sweep from :func:`load_sweep`.
    out
        Results CSV; created with a header, or appended to (rows already there are skipped;
        a last row cut short by a kill is cut off and its point computed again).
    workers
        Local worker processes (1: run in this process).
    scheduler
        Address of an existing Dask distributed scheduler, e.g. ``tcp://10.0.0.5:8786``; when
        given, points run on that cluster instead of locally. Every point carries its own seed,
        so the rows are the same whatever executor runs them (only ``elapsed_s`` differs); rows
        are appended as points finish, so an interrupted run resumes where it stopped.
    scheduler_timeout
        Seconds to wait for the scheduler connection.
    progress
        Called with (points done, points to do) after each row.

    Returns
    -------
    dict
        ``points`` (total), ``skipped`` (already in the file), ``computed``.

    Raises
    ------
    ConfigError
        On a bad worker count, an unwritable output, a Dask scheduler without Dask, or a
        scheduler that cannot be reached within ``scheduler_timeout``.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}", field="workers", value=workers)
    points = expand_sweep(sweep)
    fields = _fields(sweep)
    done, complete = _scan(sweep, out)
    todo = [p for p in points if p["point"] not in done]
    try:
        if out.exists() and out.stat().st_size > complete:
            # a row (or the header) cut short by a kill: cut it off, so the next row starts
            # on a line of its own and the partial one is computed again
            os.truncate(out, complete)
        new_file = complete == 0
        fh = out.open("a", newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(out)!r}: {exc.strerror}", field="out") from None
    with fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new_file:
            writer.writeheader()

        def emit(row: dict[str, Any], k: int) -> None:
            writer.writerow(row)
            fh.flush()
            if progress is not None:
                progress(k, len(todo))

        if scheduler is not None:
            try:
                from dask.distributed import Client, as_completed
            except ImportError:
                raise ConfigError(
                    "--scheduler needs dask.distributed: pip install 'dask[distributed]'",
                    field="scheduler",
                ) from None
            try:
                client = Client(scheduler, timeout=scheduler_timeout)  # type: ignore[no-untyped-call]
            except (OSError, ValueError, TypeError) as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ConfigError(
                    f"cannot reach Dask scheduler {scheduler!r}: {msg}",
                    field="scheduler",
                    value=scheduler,
                ) from None
            with client:
                futures = client.map(run_point, todo, pure=False)
                for k, fut in enumerate(as_completed(futures), 1):  # type: ignore[no-untyped-call]
                    emit(fut.result(), k)
        elif workers == 1:
            for k, p in enumerate(todo, 1):
                emit(run_point(p), k)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for k, row in enumerate(pool.map(run_point, todo), 1):
                    emit(row, k)
    return {"points": len(points), "skipped": len(points) - len(todo), "computed": len(todo)}
