"""Test-suite wide settings.

Hypothesis runs without per-example deadlines (CI machines are shared and timing is not what
these properties test) and, under CI, derandomised so a run is reproducible from its log.

Layers of the suite (markers, registered in ``pyproject.toml``):

* ``unit``: in-process, no server, no child process, no network socket beyond loopback pairs
  made by the test itself; every test not marked otherwise is given this marker here;
* ``e2e``: starts real servers or processes (KMEs over TLS, Mosquitto, PostgreSQL stores, the
  twin's HTTP service, Jupyter kernels), marked per module with ``pytestmark``;
* ``browser``: drives headless chromium (also ``e2e``);
* ``slow``: long checks (statistics, the 1,000-link dashboard), left out of ``make test``
  (``make test-slow``).

``pytest -m unit`` runs the fast inner loop; ``make test`` runs everything but ``slow`` in
parallel (pytest-xdist) with a per-test timeout (pytest-timeout).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_LAYERS = {"e2e", "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that is neither ``e2e`` nor ``browser`` as ``unit``."""
    for item in items:
        if not _LAYERS & {m.name for m in item.iter_markers()}:
            item.add_marker(pytest.mark.unit)
