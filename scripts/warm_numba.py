"""Compile every numba kernel of qkdtwin once, so that no user waits for compilation.

The kernels are ``@njit(cache=True)``: compiled on first use and kept on disk beside their
module (``__pycache__/*.nbi|nbc``), then loaded in milliseconds by every later process. ``make
venv`` runs this script after installing, so the first ``qkdtwin`` command after a clone does
not spend seconds compiling (the network engine with each policy, Cascade's kernels).
Prints how long it took; a second run, from the cache, takes well under a second.
"""

from __future__ import annotations

import time

import numpy as np


def main() -> None:
    """Run each kernel once on a tiny input (compiling it, or loading it from the cache)."""
    t0 = time.perf_counter()
    from qkdtwin.network import POLICIES, seed_topology, simulate, uniform_demands
    from qkdtwin.qkd.postprocess.cascade import reconcile

    topo = seed_topology()
    demands = uniform_demands(topo, 1.0)
    for policy in POLICIES:
        for generation in ("fluid", "poisson"):
            simulate(
                topo,
                demands,
                pool_capacity=100,
                keys_per_service=10,
                policy=policy,
                rng=np.random.default_rng(0),
                services=50,
                generation=generation,
            )
    for policy in ("ttd-balance", "adaptive-key-residue"):  # both class kernels, both loops
        for algorithm in ("by-class", "per-pool"):
            simulate(
                topo,
                demands,
                pool_capacity=100,
                keys_per_service=10,
                policy=policy,
                rng=np.random.default_rng(0),
                services=50,
                algorithm=algorithm,
            )
    import dataclasses

    from qkdtwin.qkd import build_link_model, simulate_link
    from qkdtwin.qkd.presets import get_preset

    # the dead-time filter runs only when the dead time spans a gate: GYS gates every 500 ns
    det = dataclasses.replace(get_preset("gys").detector(), dead_time_s=1.2e-6)
    model = build_link_model("decoy-bb84", 0.0, "gys", detector=det)
    simulate_link("decoy-bb84", model, 200_000, np.random.default_rng(0))  # dead-time filter
    # the twin re-plans its pools through plan_dynamic itself (not inside an engine loop)
    from qkdtwin.network.policies.registry import REGISTRY
    from qkdtwin.twin.keynet import KeyNetwork

    for policy in (name for name, p in REGISTRY.items() if p.dynamic):
        KeyNetwork(
            topo, demands, pool_capacity=100, keys_per_service=10, policy=policy, horizon_s=60.0
        )
    rng = np.random.default_rng(0)
    alice = rng.integers(0, 2, 4096, dtype=np.uint8)
    bob = alice ^ (rng.random(4096) < 0.03).astype(np.uint8)
    reconcile(alice, bob, 0.03, rng=rng)
    print(f"numba kernels ready in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
