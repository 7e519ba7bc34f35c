"""QKD protocols simulated pulse by pulse: BB84, decoy-state BB84, SARG04, BBM92/E91."""

from __future__ import annotations

from qkdtwin.errors import UnknownNameError

__all__ = ["ALL_PROTOCOLS", "ANALYTIC_ONLY", "SIMULATED_PROTOCOLS", "canonical_protocol"]

#: Protocols the pulse-by-pulse engine simulates.
SIMULATED_PROTOCOLS: tuple[str, ...] = ("bb84", "decoy-bb84", "sarg04", "bbm92", "e91")
#: Names that only have an analytic key rate (CV-QKD) or are a bound (PLOB).
ANALYTIC_ONLY: tuple[str, ...] = ("cv-gg02", "plob")
ALL_PROTOCOLS: tuple[str, ...] = SIMULATED_PROTOCOLS + ANALYTIC_ONLY

_ALIASES = {
    "decoy": "decoy-bb84",
    "decoy_bb84": "decoy-bb84",
    "gg02": "cv-gg02",
    "cv-qkd": "cv-gg02",
    "sarg": "sarg04",
}


def canonical_protocol(name: str) -> str:
    """Return the canonical protocol name for ``name`` (case-insensitive, a few aliases).

    Raises
    ------
    UnknownNameError
        If the name is not a known protocol.
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in ALL_PROTOCOLS:
        known = ", ".join(ALL_PROTOCOLS)
        raise UnknownNameError(
            f"unknown protocol {name!r} (known: {known})",
            field="protocol",
            value=name,
            allowed=known,
        )
    return key
