"""Key-rate allocation policies: who gets how much of the shared generation budgets.

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

from qkdtwin.errors import UnknownNameError
from qkdtwin.network.policies.adaptive_residue import akr_rates
from qkdtwin.network.policies.proportional import proportional_rates
from qkdtwin.network.policies.static import static_rates
from qkdtwin.network.policies.ttd_balance import price_weights, ttd_rates

__all__ = [
    "POLICIES",
    "akr_rates",
    "canonical_policy",
    "price_weights",
    "proportional_rates",
    "static_rates",
    "ttd_rates",
]

#: Policy names and the engine's integer code for each.
POLICIES = {
    "static": 0,
    "proportional": 1,
    "adaptive-key-residue": 2,
    "ttd-balance": 3,
    "adaptive-key-residue-resplit": 4,
}
_ALIASES = {
    "akr": "adaptive-key-residue",
    "akr-resplit": "adaptive-key-residue-resplit",
    "equal": "static",
    "ttd": "ttd-balance",
    "ours": "ttd-balance",
}


def canonical_policy(name: str) -> str:
    """Canonical policy name (aliases ``akr``, ``equal``, ``ttd``, ``ours`` accepted).

    Raises
    ------
    UnknownNameError
        If the policy does not exist.

    Examples
    --------
    >>> canonical_policy("akr")
    'adaptive-key-residue'
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in POLICIES:
        raise UnknownNameError(
            f"unknown policy {name!r}; known: {', '.join(POLICIES)}",
            field="policy",
            value=name,
            allowed=", ".join(POLICIES),
        )
    return key
