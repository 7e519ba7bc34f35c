"""Execute the example notebook headless and keep the executed copy, its figures and summary.

``examples/reproduce_fig4_and_key_rate.ipynb`` runs in a kernel of this interpreter with
``QKDTWIN_NOTEBOOK_SIZE`` set to ``--size`` (``full`` by default: 10 seeds per Fig. 4 point, key
rates every 1 km); written under ``--out``: the executed notebook, its two figures as PNG
(``fig4.png``, ``key_rate.png``) and its summary line as ``summary.json``. The repository's copy
stays without outputs. ``make notebook`` (part of ``make bench``) runs it at full size;
``tests/test_notebook.py`` runs the small size in ``make test``.

``python benchmarks/run_notebook.py [--size full|small] [--out out/notebook]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "reproduce_fig4_and_key_rate.ipynb"
KERNEL = "qkdtwin-bench"
PREFIX = "QKDTWIN_SUMMARY "
FIGURES = ("fig4.png", "key_rate.png")


def execute(size: str, workdir: Path, timeout_s: int) -> nbformat.NotebookNode:
    """Run the notebook in a kernel of this interpreter, at ``size``; return it executed."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
        )
        saved = {k: os.environ.get(k) for k in ("QKDTWIN_NOTEBOOK_SIZE", "JUPYTER_PATH")}
        os.environ["QKDTWIN_NOTEBOOK_SIZE"] = size
        os.environ["JUPYTER_PATH"] = tmp  # searched first: this interpreter's kernel
        try:
            nb = nbformat.read(NOTEBOOK, as_version=4)
            NotebookClient(
                nb,
                kernel_name=KERNEL,
                timeout=timeout_s,
                resources={"metadata": {"path": str(workdir)}},
            ).execute()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    # the executed copy names the ordinary kernel, so it opens anywhere
    nb.metadata["kernelspec"] = nbformat.read(NOTEBOOK, as_version=4).metadata["kernelspec"]
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "notebook")
    parser.add_argument("--timeout", type=int, default=600, help="Seconds per cell.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    nb = execute(args.size, args.out, args.timeout)
    elapsed = time.perf_counter() - start

    nbformat.write(nb, args.out / NOTEBOOK.name)
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    images = [out.data["image/png"] for out in outputs if "image/png" in out.get("data", {})]
    for name, image in zip(FIGURES, images, strict=True):
        (args.out / name).write_bytes(base64.b64decode(image))
    lines = [
        line
        for out in outputs
        if out.output_type == "stream"
        for line in out.text.splitlines()
        if line.startswith(PREFIX)
    ]
    summary = json.loads(lines[-1][len(PREFIX) :])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    fig4, rate = summary["fig4"], summary["key_rate"]
    top = {pol: by_c[min(by_c, key=float)][-1] for pol, by_c in fig4["success_rate"].items()}
    print(f"notebook ({args.size}) executed in {elapsed:.1f} s -> {args.out}/")
    print(f"  Fig. 4: {fig4['seeds']} seeds per point, {fig4['seconds']:.1f} s")
    print(
        "  success rate at C = 200, load 1000: " + ", ".join(f"{k} {v:.4f}" for k, v in top.items())
    )
    print(
        "  reach: "
        + ", ".join(f"{p} {d:.1f} km" for p, d in rate["max_distance_km"].items())
        + f" (key rates: {rate['seconds']:.1f} s)"
    )


if __name__ == "__main__":
    main()
