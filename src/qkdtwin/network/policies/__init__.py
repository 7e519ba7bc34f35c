"""Key-rate allocation policies: who gets how much of the shared generation budgets.

Every policy is registered once in :mod:`qkdtwin.network.policies.registry` (name, integer
code, constant or dynamic), which the network engine and the live twin both plan through.

=========================  =====================================================================
name                       rule
=========================  =====================================================================
``static``                 equal constant rate for every pool
``proportional``           constant rate proportional to the pool's expected key demand
``adaptive-key-residue``   the seed paper's Algorithm 1, recomputed at every service arrival;
                           line 21 read as *no resplit* (an OLT's unused offer stays unspent)
``adaptive-key-residue-    the same, line 21 read as a *resplit* of each OLT's remainder after
resplit``                  the minimum (docs/adaptive-key-residue.md)
``ttd-balance``            ours: balance the expected time to depletion (coverage water-filling)
=========================  =====================================================================
"""

from __future__ import annotations

from qkdtwin.network.policies.adaptive_residue import akr_rates
from qkdtwin.network.policies.akr_classes import PoolClasses, pool_classes, run_akr_by_class
from qkdtwin.network.policies.proportional import proportional_rates
from qkdtwin.network.policies.registry import (
    POLICIES,
    REGISTRY,
    Policy,
    Routing,
    canonical_policy,
    constant_rates,
    get_policy,
    plan_dynamic,
    resource_csr,
    routing_arrays,
)
from qkdtwin.network.policies.static import static_rates
from qkdtwin.network.policies.ttd_balance import price_weights, ttd_rates

__all__ = [
    "POLICIES",
    "REGISTRY",
    "Policy",
    "PoolClasses",
    "Routing",
    "akr_rates",
    "canonical_policy",
    "constant_rates",
    "get_policy",
    "plan_dynamic",
    "pool_classes",
    "price_weights",
    "proportional_rates",
    "resource_csr",
    "routing_arrays",
    "run_akr_by_class",
    "static_rates",
    "ttd_rates",
]
