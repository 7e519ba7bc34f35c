"""Keep BENCHMARKS.md as named sections that each benchmark script rewrites on its own."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = """# Benchmarks

Every number below is produced by `make bench`, which runs the scripts in `benchmarks/`; each
script rewrites only its own section. Single process, one core unless a section says otherwise.
"""


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of ``path`` with ``body``."""
    text = path.read_text() if path.exists() else HEADER
    if not text.startswith("# Benchmarks"):
        text = HEADER
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text if text.endswith("\n") else text + "\n")
