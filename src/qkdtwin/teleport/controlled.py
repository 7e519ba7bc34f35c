"""The seed paper's controlled two-qubit teleportation (five-particle GHZ + Bell channel).

Particles and owners, as in the paper (its Fig. 2b):

* the message: an arbitrary, possibly entangled two-qubit state on particles ``A`` and ``B``;
* the channel: ``|GHZ5> = (|00000> + |11111>)/sqrt 2`` on particles 1, 2, 3, 5, 6 and
  ``|Phi+> = (|00> + |11>)/sqrt 2`` on particles 4, 7;
* Alice holds ``A, B, 5, 7``; Bob holds ``2, 4``; the controller Charlie holds ``1, 3, 6``.

Steps: (1) Alice measures ``(A, 5)`` and ``(B, 7)`` in the Bell basis and sends her 2 + 2
bits to Bob; (2) Charlie measures ``1, 3, 6`` (each in the X basis by default) and sends his
3 bits to Bob; (3) Bob applies a local correction to ``2`` and ``4`` chosen from the five
results and holds the message state.

Bob's correction is not written down by hand: :func:`derive_corrections` runs the protocol
with particles ``A`` and ``B`` each maximally entangled with a reference qubit, enumerates
every measurement branch, reads Bob's post-measurement state as the linear map ``M`` that the
branch applies to the message (Choi-Jamiołkowski), checks that ``M`` is proportional to a
unitary, and searches the local Pauli group (then the local Clifford group) for the ``C`` with
``C M ∝ I``. The resulting :class:`CorrectionTable` drives the simulations.

References
----------
The scheme: the seed paper of this project (``shared/seeds/000_05427028f3e1558c.txt``,
section on the teleportation transmission process and Fig. 2). Teleportation: C. H. Bennett
et al., PRL 70, 1895 (1993). Controlled teleportation with GHZ channels: A. Karlsson and
M. Bourennane, PRA 58, 4394 (1998).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from numpy.typing import NDArray

from qkdtwin.errors import ConfigError, SimulationError, UnknownNameError
from qkdtwin.teleport.density import DensityMatrix
from qkdtwin.teleport.fidelity import (
    haar_average_fidelity,
    product_average_fidelity,
    state_fidelity,
)
from qkdtwin.teleport.gates import BELL_NAMES, I2, SDG, H, S, X, Y, Z, basis_unitary
from qkdtwin.teleport.noise import NoiseDict, NoiseModel, apply_noise
from qkdtwin.teleport.random_states import random_product_state, random_state
from qkdtwin.teleport.states import StateVector

__all__ = [
    "ALICE_PARTICLES",
    "BELL_PARTICLES",
    "BOB_PARTICLES",
    "CHANNEL_PARTICLES",
    "CHARLIE_BASES",
    "CHARLIE_PARTICLES",
    "GHZ_PARTICLES",
    "LOCAL_GATES",
    "NO_CONTROLLER_FIDELITY_HAAR",
    "NO_CONTROLLER_FIDELITY_PRODUCT",
    "Correction",
    "CorrectionTable",
    "FidelityRun",
    "TeleportResult",
    "channel_state",
    "charlie_outcome_name",
    "charlie_reduced_state",
    "derive_corrections",
    "expected_fidelity",
    "no_controller_fidelity",
    "noise_sweep",
    "protocol_choi",
    "protocol_output",
    "run_trials",
    "teleport",
    "teleport_branch",
]

#: Particles of the GHZ5 state, of the Bell pair, and all seven channel particles.
GHZ_PARTICLES: tuple[str, ...] = ("1", "2", "3", "5", "6")
BELL_PARTICLES: tuple[str, ...] = ("4", "7")
CHANNEL_PARTICLES: tuple[str, ...] = ("1", "2", "3", "4", "5", "6", "7")
#: Who holds what.
ALICE_PARTICLES: tuple[str, ...] = ("A", "B", "5", "7")
BOB_PARTICLES: tuple[str, ...] = ("2", "4")
CHARLIE_PARTICLES: tuple[str, ...] = ("1", "3", "6")
#: Bases in which Charlie may measure his three particles (``x`` is the default reading).
CHARLIE_BASES: tuple[str, ...] = ("x", "y", "ghz")

#: Bob's fidelity without Charlie's bits, averaged over Haar-random two-qubit messages: 3/5.
NO_CONTROLLER_FIDELITY_HAAR = 3.0 / 5.0
#: The same for products of independent Haar-random qubits: 2/3.
NO_CONTROLLER_FIDELITY_PRODUCT = 2.0 / 3.0

_MESSAGE = ("A", "B")
_ALL = ("A", "B", *CHANNEL_PARTICLES)


# --------------------------------------------------------------------------- local gates
def _clifford_group() -> dict[str, NDArray[np.complex128]]:
    """List the 24 one-qubit Cliffords modulo phase, shortest words first, Paulis first.

    A label is an operator product: ``"S*X"`` is the matrix ``S @ X`` (X acts first).
    """
    gens = (("X", X), ("Z", Z), ("Y", Y), ("S", S), ("Sdg", SDG), ("H", H))
    found: dict[str, NDArray[np.complex128]] = {"I": I2}
    frontier = [("I", I2)]

    def known(m: NDArray[np.complex128]) -> bool:
        return any(abs(np.trace(k.conj().T @ m)) > 2 - 1e-9 for k in found.values())

    while frontier:
        nxt = []
        for lab, m in frontier:
            for glab, g in gens:
                prod = g @ m
                if not known(prod):
                    name = glab if lab == "I" else f"{glab}*{lab}"
                    found[name] = prod
                    nxt.append((name, prod))
        frontier = nxt
    return found


#: One-qubit corrections Bob may apply, in search order: I, X, Z, Y, then the other Cliffords.
LOCAL_GATES: dict[str, NDArray[np.complex128]] = _clifford_group()
for _m in LOCAL_GATES.values():
    _m.flags.writeable = False
_GATE_NAMES = tuple(LOCAL_GATES)
_GATE_MATS = np.stack([LOCAL_GATES[k] for k in _GATE_NAMES])
_PAULI_COUNT = 4
_PAIRS = sorted(
    itertools.product(range(len(_GATE_NAMES)), repeat=2),
    key=lambda ij: (max(ij) >= _PAULI_COUNT, max(ij), ij),
)
_PAIR_MATS = np.stack([np.kron(_GATE_MATS[i], _GATE_MATS[j]) for i, j in _PAIRS])


def _local(on_2: str, on_4: str) -> NDArray[np.complex128]:
    """``C_2 ⊗ C_4`` from two :data:`LOCAL_GATES` labels."""
    return np.asarray(np.kron(LOCAL_GATES[on_2], LOCAL_GATES[on_4]), dtype=np.complex128)


def channel_state() -> StateVector:
    """``|GHZ5>_{1,2,3,5,6} ⊗ |Phi+>_{4,7}``, qubits ordered 1 .. 7.

    Examples
    --------
    >>> channel_state().labels
    ('1', '2', '3', '4', '5', '6', '7')
    """
    ghz = StateVector.ghz(GHZ_PARTICLES)
    bell = StateVector.bell("Phi+", BELL_PARTICLES)
    return ghz.tensor_product(bell).reorder(CHANNEL_PARTICLES)


def _check_basis(charlie_basis: str) -> str:
    if charlie_basis not in CHARLIE_BASES:
        raise UnknownNameError(
            f"unknown basis {charlie_basis!r} for Charlie; choose one of "
            f"{', '.join(CHARLIE_BASES)}",
            field="charlie_basis",
            value=charlie_basis,
            allowed=", ".join(CHARLIE_BASES),
        )
    return charlie_basis


def charlie_outcome_name(outcome: int, charlie_basis: str = "x") -> str:
    """Readable name of Charlie's outcome on particles 1, 3, 6.

    ``x``: one ``+``/``-`` per particle (``"+-+"``); ``y``: ``r``/``l`` per particle for
    ``|+i>``/``|-i>``; ``ghz``: the sign and the first bit pattern of the GHZ-basis state,
    ``"+001"`` being ``(|001> + |110>)/sqrt 2``.

    Examples
    --------
    >>> charlie_outcome_name(5, "x")
    '-+-'
    """
    _check_basis(charlie_basis)
    bits = [(outcome >> (2 - i)) & 1 for i in range(3)]
    if charlie_basis == "x":
        return "".join("+-"[b] for b in bits)
    if charlie_basis == "y":
        return "".join("rl"[b] for b in bits)
    return f"{'+-'[bits[0]]}0{bits[1]}{bits[2]}"


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Correction:
    """Bob's correction for one measurement branch.

    Attributes
    ----------
    alice_a5, alice_b7
        Alice's Bell outcomes on ``(A, 5)`` and ``(B, 7)`` (index into
        :data:`~qkdtwin.teleport.gates.BELL_NAMES`).
    charlie
        Charlie's outcome on ``(1, 3, 6)`` (see :func:`charlie_outcome_name`).
    probability
        Probability of the branch (independent of the message).
    on_2, on_4
        Labels in :data:`LOCAL_GATES` of the gates Bob applies to particles 2 and 4.
    """

    alice_a5: int
    alice_b7: int
    charlie: int
    probability: float
    on_2: str
    on_4: str

    def matrix(self) -> NDArray[np.complex128]:
        """Return the two-qubit correction on ``(2, 4)``."""
        return _local(self.on_2, self.on_4)


#: Bob's gates on his particles ``2`` and ``4`` (``"S*X"``: X first, then S).
BobCorrection = TypedDict("BobCorrection", {"2": str, "4": str})


class CorrectionRow(TypedDict):
    """One branch of a :class:`CorrectionTable` with readable outcome names."""

    alice_a5: str
    alice_b7: str
    charlie: str
    probability: float
    correction: BobCorrection


class UncontrolledCorrection(TypedDict):
    """Bob's best correction for one outcome of Alice when Charlie keeps his result."""

    alice_a5: str
    alice_b7: str
    correction: BobCorrection


class TeleportParticles(TypedDict):
    """Who holds which particle."""

    alice: list[str]
    bob: list[str]
    charlie: list[str]


class CorrectionTableDict(TypedDict):
    """JSON-ready form of a :class:`CorrectionTable` (:meth:`CorrectionTable.to_dict`)."""

    charlie_basis: str
    particles: TeleportParticles
    rows: list[CorrectionRow]
    without_controller: list[UncontrolledCorrection]


@dataclass(frozen=True)
class CorrectionTable:
    """Bob's corrections for every branch, derived by :func:`derive_corrections`.

    Attributes
    ----------
    charlie_basis
        The basis of Charlie's measurement.
    rows
        One :class:`Correction` per branch of non-zero probability, ordered by
        ``(alice_a5, alice_b7, charlie)``.
    without_controller
        Bob's best local correction for each Alice outcome ``(a5, b7)`` when Charlie keeps his
        result: the one maximising the branch-averaged process fidelity.

    Notes
    -----
    With Charlie's GHZ-basis measurement only the outcomes ``(|000> ± |111>)/sqrt 2`` occur
    noise-free; noise on his particles can produce the other six. A bit flip on one of his
    particles maps GHZ-basis states onto each other keeping the sign, so for those outcomes
    Bob uses the sign bit, i.e. the correction of ``(s, 00)`` (:meth:`correction`).
    """

    charlie_basis: str
    rows: tuple[Correction, ...]
    without_controller: dict[tuple[int, int], tuple[str, str]] = field(repr=False)
    _index: dict[tuple[int, int, int], int] = field(init=False, repr=False, compare=False)
    _matrices: NDArray[np.complex128] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {(r.alice_a5, r.alice_b7, r.charlie): i for i, r in enumerate(self.rows)}
        object.__setattr__(self, "_index", index)
        mats = np.stack([_local(*self.correction(m >> 5, (m >> 3) & 3, m & 7)) for m in range(128)])
        mats.flags.writeable = False
        object.__setattr__(self, "_matrices", mats)

    def lookup(self, alice_a5: int, alice_b7: int, charlie: int) -> Correction:
        """Return the row of one branch.

        Raises
        ------
        ConfigError
            If no branch has these outcomes (or it has zero probability).
        """
        i = self._index.get((alice_a5, alice_b7, charlie))
        if i is None:
            raise ConfigError(
                f"no branch with outcomes ({alice_a5}, {alice_b7}, {charlie})",
                field="outcome",
                value=(alice_a5, alice_b7, charlie),
            )
        return self.rows[i]

    def correction(self, alice_a5: int, alice_b7: int, charlie: int) -> tuple[str, str]:
        """Return Bob's gates on ``(2, 4)`` for any outcome, including noise-only ones.

        Raises
        ------
        ConfigError
            If the outcome is neither in the table nor covered by the GHZ sign-bit rule.
        """
        i = self._index.get((alice_a5, alice_b7, charlie))
        if i is None and self.charlie_basis == "ghz":
            i = self._index.get((alice_a5, alice_b7, charlie & 4))
        if i is None:
            raise ConfigError(
                f"no correction for outcomes ({alice_a5}, {alice_b7}, {charlie})",
                field="outcome",
                value=(alice_a5, alice_b7, charlie),
            )
        return self.rows[i].on_2, self.rows[i].on_4

    def outcome_corrections(self) -> NDArray[np.complex128]:
        """Read-only ``(128, 4, 4)`` stack: Bob's correction for outcome ``a5 b7 c`` (binary)."""
        return self._matrices

    def to_rows(self) -> list[CorrectionRow]:
        """JSON-ready rows with readable outcome names."""
        return [
            {
                "alice_a5": BELL_NAMES[r.alice_a5],
                "alice_b7": BELL_NAMES[r.alice_b7],
                "charlie": charlie_outcome_name(r.charlie, self.charlie_basis),
                "probability": r.probability,
                "correction": {"2": r.on_2, "4": r.on_4},
            }
            for r in self.rows
        ]

    def to_dict(self) -> CorrectionTableDict:
        """JSON-ready form: the basis, every row, and the no-controller corrections."""
        return {
            "charlie_basis": self.charlie_basis,
            "particles": {
                "alice": list(ALICE_PARTICLES),
                "bob": list(BOB_PARTICLES),
                "charlie": list(CHARLIE_PARTICLES),
            },
            "rows": self.to_rows(),
            "without_controller": [
                {
                    "alice_a5": BELL_NAMES[a],
                    "alice_b7": BELL_NAMES[b],
                    "correction": {"2": c2, "4": c4},
                }
                for (a, b), (c2, c4) in sorted(self.without_controller.items())
            ],
        }

    def to_markdown(self) -> str:
        """Render the table as GitHub markdown (as printed in ``docs/teleport.md``)."""
        lines = [
            "| # | Alice (A,5) | Alice (B,7) | Charlie (1,3,6) | p | Bob on 2 | Bob on 4 |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(self.rows, 1):
            lines.append(
                f"| {i} | {BELL_NAMES[r.alice_a5]} | {BELL_NAMES[r.alice_b7]} | "
                f"{charlie_outcome_name(r.charlie, self.charlie_basis)} | "
                f"{_fraction(r.probability)} | {r.on_2} | {r.on_4} |"
            )
        return "\n".join(lines)


def _fraction(p: float) -> str:
    inv = 1.0 / p
    return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-9 else f"{p:.6g}"


def _normalized_map(state: StateVector) -> NDArray[np.complex128]:
    """Bob's branch map ``M`` (on 2, 4 <- A, B) from the branch state on (RA, RB, 2, 4)."""
    amp = state.reorder(["RA", "RB", "2", "4"]).amplitudes.reshape(4, 4)
    m = amp.T  # |state> ∝ sum_i |i>_ref ⊗ M|i>_Bob, so M[k, i] ∝ amp[i, k]
    scale = math.sqrt(float(np.trace(m.conj().T @ m).real) / 4.0)
    m = m / scale
    if not np.allclose(m.conj().T @ m, np.eye(4), atol=1e-9):
        raise SimulationError(
            "a measurement branch does not map the message unitarily onto "
            "Bob's particles: no correction can restore it"
        )
    return m


def _overlaps(m: NDArray[np.complex128]) -> NDArray[np.float64]:
    """``|tr(C M)| / 4`` for every candidate local correction ``C`` (1 when ``C M ∝ I``)."""
    return np.asarray(np.abs(np.einsum("cij,ji->c", _PAIR_MATS, m)) / 4.0, dtype=np.float64)


@functools.lru_cache(maxsize=8)
def derive_corrections(charlie_basis: str = "x") -> CorrectionTable:
    """Derive Bob's correction for every branch by simulating the protocol.

    The message particles ``A`` and ``B`` are each prepared maximally entangled with a
    reference qubit (``RA``, ``RB``). For each combination of Alice's two Bell outcomes and
    Charlie's outcome, Bob's post-measurement state ``|chi>`` on ``(RA, RB, 2, 4)`` equals
    ``(I ⊗ M)|Phi>|Phi>`` up to normalisation, where ``M`` is the map the branch applies to
    *any* message (Choi-Jamiołkowski). The correction is the first ``C = C_2 ⊗ C_4`` in
    :data:`LOCAL_GATES` order with ``|tr(C M)| = 4``, i.e. ``C M ∝ I``.

    Parameters
    ----------
    charlie_basis
        ``"x"`` (default): Charlie measures each of 1, 3, 6 in the X basis; ``"y"``: in the
        Y basis (then Bob needs S gates: a Clifford, not a Pauli, correction); ``"ghz"``: a
        three-qubit GHZ-basis measurement.

    Returns
    -------
    CorrectionTable

    Raises
    ------
    UnknownNameError
        If the basis is not one of :data:`CHARLIE_BASES`.
    SimulationError
        If a branch cannot be corrected by a local Clifford (it never happens for the three
        bases offered).

    Examples
    --------
    >>> table = derive_corrections("x")
    >>> len(table.rows), table.rows[0].on_2, table.rows[0].on_4
    (128, 'I', 'I')
    """
    _check_basis(charlie_basis)
    ref = StateVector.bell("Phi+", ["RA", "A"]).tensor_product(
        StateVector.bell("Phi+", ["RB", "B"])
    )
    full = ref.tensor_product(channel_state())
    rows: list[Correction] = []
    maps: dict[tuple[int, int], list[tuple[float, NDArray[np.complex128]]]] = {}
    for ba in full.branches(["A", "5"], "bell"):
        for bb in _sv(ba.state).branches(["B", "7"], "bell"):
            for bc in _sv(bb.state).branches(list(CHARLIE_PARTICLES), charlie_basis):
                m = _normalized_map(_sv(bc.state))
                ov = _overlaps(m)
                hit = np.flatnonzero(ov > 1.0 - 1e-9)
                if hit.size == 0:
                    raise SimulationError("no local Clifford correction restores the message")
                i, j = _PAIRS[int(hit[0])]
                p = ba.probability * bb.probability * bc.probability
                rows.append(
                    Correction(
                        ba.outcome, bb.outcome, bc.outcome, p, _GATE_NAMES[i], _GATE_NAMES[j]
                    )
                )
                maps.setdefault((ba.outcome, bb.outcome), []).append((bc.probability, m))
    without: dict[tuple[int, int], tuple[str, str]] = {}
    for key, items in maps.items():
        # process fidelity of C∘(branch-averaged map) is sum_c p_c |tr(C M_c)/4|^2
        score = np.zeros(len(_PAIRS))
        for p, m in items:
            score += p * _overlaps(m) ** 2
        # ties (I, Z, S, ... all score 1/2 on particle 2) go to the first, i.e. simplest, gate
        best = int(np.flatnonzero(score >= score.max() - 1e-9)[0])
        i, j = _PAIRS[best]
        without[key] = (_GATE_NAMES[i], _GATE_NAMES[j])
    return CorrectionTable(charlie_basis, tuple(rows), without)


def _sv(state: StateVector | DensityMatrix) -> StateVector:
    if not isinstance(state, StateVector):  # pragma: no cover - branches of a StateVector
        raise SimulationError("expected a pure state")
    return state


# --------------------------------------------------------------------------- simulation
def _message(state: StateVector) -> StateVector:
    if not isinstance(state, StateVector) or state.n_qubits != 2:
        raise ConfigError("the message must be a two-qubit StateVector", field="state")
    return StateVector(state.amplitudes, _MESSAGE)


@dataclass(frozen=True)
class TeleportResult:
    """One run of the protocol.

    Attributes
    ----------
    alice_a5, alice_b7
        Alice's Bell outcomes.
    charlie
        Charlie's outcome, or ``None`` when he withholds it.
    correction
        Labels of Bob's gates on particles 2 and 4.
    bob_state
        Bob's corrected state on ``(2, 4)``: a :class:`StateVector`, or a
        :class:`DensityMatrix` when Charlie's particles are traced out.
    fidelity
        Fidelity of ``bob_state`` with the message.
    """

    alice_a5: int
    alice_b7: int
    charlie: int | None
    correction: tuple[str, str]
    bob_state: StateVector | DensityMatrix
    fidelity: float


def teleport(
    state: StateVector,
    rng: np.random.Generator,
    *,
    noise: NoiseModel | None = None,
    noisy_particles: Sequence[str] = CHANNEL_PARTICLES,
    controller: bool = True,
    charlie_basis: str = "x",
) -> TeleportResult:
    """Teleport a two-qubit message once, sampling every measurement.

    Parameters
    ----------
    state
        The message on ``(A, B)``: any two-qubit state vector (its labels are ignored).
    rng
        Source of the measurement outcomes and noise trajectories.
    noise
        One-qubit channel applied to each of ``noisy_particles`` after the channel state is
        prepared (one sampled trajectory; :func:`expected_fidelity` gives the exact mean).
    noisy_particles
        Which channel particles the noise hits; default all seven.
    controller
        ``False``: Charlie withholds his result. Bob's state is then his reduced density
        matrix (Charlie's particles traced out) after the best correction that depends on
        Alice's bits alone (:attr:`CorrectionTable.without_controller`).
    charlie_basis
        See :func:`derive_corrections`.

    Returns
    -------
    TeleportResult

    Raises
    ------
    ConfigError
        If the message is not a two-qubit state or a noisy particle is not a channel particle.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> msg = StateVector([0.6, 0, 0, 0.8j])
    >>> round(teleport(msg, rng).fidelity, 12)
    1.0
    """
    msg = _message(state)
    table = derive_corrections(charlie_basis)
    ch = channel_state()
    if noise is not None:
        ch = apply_noise(ch, noise, _noisy(noisy_particles), rng)
    full = msg.tensor_product(ch)
    a5, s = full.measure(["A", "5"], rng, "bell")
    b7, s = s.measure(["B", "7"], rng, "bell")
    if controller:
        c, s = s.measure(list(CHARLIE_PARTICLES), rng, charlie_basis)
        on_2, on_4 = table.correction(a5, b7, c)
        bob = s.reorder(BOB_PARTICLES).apply(_local(on_2, on_4), list(BOB_PARTICLES))
        fid = state_fidelity(StateVector(msg.amplitudes, BOB_PARTICLES), bob)
        return TeleportResult(a5, b7, c, (on_2, on_4), bob, fid)
    c2, c4 = table.without_controller[(a5, b7)]
    rho = s.reduced_density_matrix(list(BOB_PARTICLES))
    rho = rho.apply(_local(c2, c4), list(BOB_PARTICLES))
    fid = state_fidelity(StateVector(msg.amplitudes, BOB_PARTICLES), rho)
    return TeleportResult(a5, b7, None, (c2, c4), rho, fid)


def teleport_branch(
    state: StateVector,
    alice_a5: int,
    alice_b7: int,
    charlie: int,
    *,
    charlie_basis: str = "x",
) -> tuple[float, StateVector]:
    """Bob's corrected state in one chosen branch (noise-free), and the branch probability.

    Raises
    ------
    ConfigError
        If an outcome index is out of range.
    SimulationError
        If the branch has probability zero.

    Examples
    --------
    >>> msg = StateVector([0.6, 0, 0, 0.8])
    >>> p, bob = teleport_branch(msg, 3, 1, 6)
    >>> round(p * 128, 12), bool(np.allclose(bob.amplitudes, msg.amplitudes))
    (1.0, True)
    """
    msg = _message(state)
    if alice_a5 not in range(4) or alice_b7 not in range(4) or charlie not in range(8):
        raise ConfigError(
            f"outcomes must be Bell 0..3, 0..3 and Charlie 0..7, got "
            f"({alice_a5}, {alice_b7}, {charlie})",
            field="outcome",
            value=(alice_a5, alice_b7, charlie),
        )
    try:
        row = derive_corrections(charlie_basis).lookup(alice_a5, alice_b7, charlie)
    except ConfigError:
        raise SimulationError(
            f"branch ({alice_a5}, {alice_b7}, {charlie}) has probability zero"
        ) from None
    full = msg.tensor_product(channel_state())
    pa, s = full.project(["A", "5"], alice_a5, "bell")
    pb, s = s.project(["B", "7"], alice_b7, "bell")
    pc, s = s.project(list(CHARLIE_PARTICLES), charlie, charlie_basis)
    bob = s.reorder(BOB_PARTICLES).apply(row.matrix(), list(BOB_PARTICLES))
    # fix the global phase so that equal states compare equal amplitude by amplitude
    ov = np.vdot(msg.amplitudes, bob.amplitudes)
    phase = ov / abs(ov) if abs(ov) > 1e-12 else 1.0
    return pa * pb * pc, StateVector(bob.amplitudes / phase, BOB_PARTICLES)


def _noisy(particles: Sequence[str]) -> list[str]:
    out = [str(p) for p in particles]
    bad = [p for p in out if p not in CHANNEL_PARTICLES]
    if bad:
        raise ConfigError(
            f"noise acts on channel particles 1-7, got {bad}",
            field="noisy_particles",
            value=bad,
            allowed="1..7",
        )
    return out


class FidelityRunDict(TypedDict):
    """JSON-ready summary of a :class:`FidelityRun` (:meth:`FidelityRun.to_dict`)."""

    trials: int
    fidelity_mean: float
    fidelity_min: float
    fidelity_max: float
    fidelity_stderr: float
    controller: bool
    noise: NoiseDict | None
    charlie_basis: str
    inputs: str


@dataclass(frozen=True)
class FidelityRun:
    """Fidelities of many teleportations of random messages (:func:`run_trials`).

    Attributes
    ----------
    fidelities
        One fidelity per trial.
    controller, noise, charlie_basis, inputs
        What was run.
    """

    fidelities: NDArray[np.float64]
    controller: bool
    noise: NoiseModel | None
    charlie_basis: str
    inputs: str

    @property
    def trials(self) -> int:
        """Number of trials."""
        return int(self.fidelities.size)

    @property
    def mean(self) -> float:
        """Mean fidelity."""
        return float(self.fidelities.mean())

    @property
    def stderr(self) -> float:
        """Standard error of the mean (0 for one trial)."""
        n = self.fidelities.size
        return float(self.fidelities.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0

    def to_dict(self) -> FidelityRunDict:
        """JSON-ready summary (no per-trial values)."""
        return {
            "trials": self.trials,
            "fidelity_mean": self.mean,
            "fidelity_min": float(self.fidelities.min()),
            "fidelity_max": float(self.fidelities.max()),
            "fidelity_stderr": self.stderr,
            "controller": self.controller,
            "noise": None if self.noise is None else self.noise.to_dict(),
            "charlie_basis": self.charlie_basis,
            "inputs": self.inputs,
        }


def run_trials(
    trials: int,
    rng: np.random.Generator,
    *,
    noise: NoiseModel | None = None,
    noisy_particles: Sequence[str] = CHANNEL_PARTICLES,
    controller: bool = True,
    charlie_basis: str = "x",
    inputs: str = "haar",
    progress: Callable[[int], object] | None = None,
) -> FidelityRun:
    """Teleport ``trials`` random messages and collect the fidelities.

    Parameters
    ----------
    trials
        Number of messages, >= 1.
    rng
        Random source for the messages, the measurements and the noise.
    inputs
        ``"haar"``: Haar-random two-qubit states (entangled in general); ``"product"``:
        products of Haar-random qubits.
    progress
        Optional callable, called with the number of trials done.
    noise, noisy_particles, controller, charlie_basis
        As in :func:`teleport`.

    Raises
    ------
    ConfigError
        If ``trials < 1``.
    UnknownNameError
        If ``inputs`` is unknown.

    Examples
    --------
    >>> run = run_trials(50, np.random.default_rng(3))
    >>> round(run.mean, 12), round(run.to_dict()["fidelity_min"], 12)
    (1.0, 1.0)
    """
    if isinstance(trials, bool) or not isinstance(trials, int | np.integer) or trials < 1:
        raise ConfigError(
            f"trials must be a whole number >= 1, got {trials!r}",
            field="trials",
            value=trials,
            allowed=">= 1",
        )
    if inputs not in ("haar", "product"):
        raise UnknownNameError(
            f"unknown input ensemble {inputs!r}; choose haar or product",
            field="inputs",
            value=inputs,
            allowed="haar, product",
        )
    draw = random_state if inputs == "haar" else random_product_state
    out = np.empty(int(trials))
    for t in range(int(trials)):
        msg = draw(2, rng, _MESSAGE)
        out[t] = teleport(
            msg,
            rng,
            noise=noise,
            noisy_particles=noisy_particles,
            controller=controller,
            charlie_basis=charlie_basis,
        ).fidelity
        if progress is not None and (t + 1) % 100 == 0:
            progress(t + 1)
    return FidelityRun(out, controller, noise, charlie_basis, inputs)


# --------------------------------------------------------------------------- exact channel
@functools.lru_cache(maxsize=64)
def _channel_dm(
    noise: NoiseModel | None, particles: tuple[str, ...], charlie_basis: str | None
) -> DensityMatrix:
    """Return the noisy channel state, Charlie's particles rotated for his measurement.

    After the rotation his measurement in ``charlie_basis`` is a Z measurement (``None``: no
    rotation).
    """
    ch = apply_noise(channel_state().to_density_matrix(), noise, particles)
    if charlie_basis is not None:
        ch = ch.apply(basis_unitary(charlie_basis, 3).conj().T, list(CHARLIE_PARTICLES))
    return ch


def protocol_output(
    message: NDArray[np.complex128] | DensityMatrix | StateVector,
    *,
    noise: NoiseModel | None = None,
    noisy_particles: Sequence[str] = CHANNEL_PARTICLES,
    controller: bool = True,
    charlie_basis: str = "x",
) -> NDArray[np.complex128]:
    """Bob's corrected state averaged over every branch (exact, density matrices).

    This is the protocol as a quantum channel from ``(A, B)`` to ``(2, 4)``:
    ``sum_branches C_b <b| (rho_msg ⊗ rho_channel) |b> C_b^dagger``, with the noisy channel
    state ``rho_channel`` computed exactly. Being linear, it accepts any ``4 x 4`` operator.

    Parameters
    ----------
    message
        ``4 x 4`` operator on ``(A, B)``, or a state.
    noise, noisy_particles, controller, charlie_basis
        As in :func:`teleport`.

    Returns
    -------
    ndarray of complex, shape (4, 4)
        Bob's state on ``(2, 4)``.
    """
    if isinstance(message, StateVector):
        rho_in = message.to_density_matrix().matrix
    elif isinstance(message, DensityMatrix):
        rho_in = message.matrix
    else:
        rho_in = np.asarray(message, dtype=np.complex128)
    if rho_in.shape != (4, 4):
        raise ConfigError(f"the message operator must be 4x4, got {rho_in.shape}", field="message")
    table = derive_corrections(charlie_basis)
    # Charlie's measurement commutes with Alice's, so his basis change is applied once to the
    # (cached) channel state rather than to every 9-qubit operator.
    ch = _channel_dm(noise, tuple(_noisy(noisy_particles)), charlie_basis if controller else None)
    total = DensityMatrix(rho_in, _MESSAGE, validate=False).tensor_product(ch)
    bell_dag = basis_unitary("bell", 2).conj().T
    total = total.apply(bell_dag, ["A", "5"]).apply(bell_dag, ["B", "7"])
    out = np.zeros((4, 4), dtype=np.complex128)
    if controller:
        blocks, rest = total.outcome_blocks(["A", "5", "B", "7", *CHARLIE_PARTICLES], "z")
        _expect_bob(rest)
        c = table.outcome_corrections()
        return np.asarray(np.einsum("rij,rjk,rlk->il", c, blocks, c.conj()), dtype=np.complex128)
    reduced = total.partial_trace(["A", "5", "B", "7", *BOB_PARTICLES])
    blocks, rest = reduced.outcome_blocks(["A", "5", "B", "7"], "z")
    _expect_bob(rest)
    for (a5, b7), (c2, c4) in table.without_controller.items():
        c = _local(c2, c4)
        out += c @ blocks[(a5 << 2) | b7] @ c.conj().T
    return out


def _expect_bob(rest: tuple[str, ...]) -> None:
    if rest != BOB_PARTICLES:  # pragma: no cover - fixed by the particle order
        raise SimulationError(f"expected Bob's particles (2, 4), got {rest}")


def protocol_choi(
    *,
    noise: NoiseModel | None = None,
    noisy_particles: Sequence[str] = CHANNEL_PARTICLES,
    controller: bool = True,
    charlie_basis: str = "x",
) -> NDArray[np.complex128]:
    """Normalised Choi state (16 x 16) of the whole protocol, message ``(A, B)`` -> Bob.

    Equal to ``choi_matrix(protocol_output, 4)`` (tested) but computed in one contraction:
    for the input ``|i><j|`` the Bell projection ``<beta_m|_{A5}`` acts on the channel state
    as the ``2 x 2`` matrix ``<beta_m|i, .>`` on particle 5 (likewise for ``B, 7``), so every
    branch block of every matrix unit comes from the (noisy, Charlie-rotated) seven-particle
    channel density matrix with one ``einsum``, without building 9-qubit operators.

    Returns
    -------
    ndarray of complex, shape (16, 16)
        Input factor ``(A, B)`` first, then Bob's ``(2, 4)``.
    """
    table = derive_corrections(charlie_basis)
    particles = tuple(_noisy(noisy_particles))
    ch = _channel_dm(noise, particles, charlie_basis if controller else None)
    rho = ch.reorder(["5", "7", "1", "3", "6", "2", "4"]).matrix.reshape((2,) * 14)
    # u[m, a, k] = <beta_m | a>_A |k>_5
    u = basis_unitary("bell", 2).conj().T.reshape(4, 2, 2)
    uc = u.conj()
    if controller:
        # Charlie's (rotated) particles c d e are diagonal: one Z outcome per block
        blocks = np.einsum(
            "Mip,Njq,pqcdexyPQcdezw,MkP,NlQ->MNcdeijklxyzw", u, u, rho, uc, uc, optimize=True
        ).reshape(128, 4, 4, 4, 4)
        idx: list[int] | slice = slice(None)
        corr = table.outcome_corrections()
    else:
        # Charlie's particles traced out; Bob corrects from Alice's bits alone
        blocks = np.einsum(
            "Mip,Njq,pqcdexyPQcdezw,MkP,NlQ->MNijklxyzw", u, u, rho, uc, uc, optimize=True
        ).reshape(16, 4, 4, 4, 4)
        keys = sorted(table.without_controller)
        idx = [(a5 << 2) | b7 for a5, b7 in keys]
        corr = np.stack([_local(*table.without_controller[k]) for k in keys])
    # out[I, J, a, d] = (channel applied to |I><J|)[a, d]
    out = np.einsum("rab,rIJbc,rdc->IJad", corr, blocks[idx], corr.conj(), optimize=True)
    return np.asarray(out.transpose(0, 2, 1, 3).reshape(16, 16) / 4.0, dtype=np.complex128)


def expected_fidelity(
    *,
    noise: NoiseModel | None = None,
    noisy_particles: Sequence[str] = CHANNEL_PARTICLES,
    controller: bool = True,
    charlie_basis: str = "x",
    inputs: str = "haar",
) -> float:
    """Exact mean fidelity over random messages, from the protocol's Choi state.

    ``haar``: ``(d F_pro + 1)/(d + 1)`` with ``d = 4``; ``product``: the average over
    products of Haar qubits (:func:`~qkdtwin.teleport.fidelity.product_average_fidelity`).

    Examples
    --------
    >>> round(expected_fidelity(controller=False), 12)
    0.6
    >>> round(expected_fidelity(controller=False, inputs="product"), 12)
    0.666666666667
    """
    if inputs not in ("haar", "product"):
        raise UnknownNameError(
            f"unknown input ensemble {inputs!r}; choose haar or product",
            field="inputs",
            value=inputs,
            allowed="haar, product",
        )
    j = protocol_choi(
        noise=noise,
        noisy_particles=noisy_particles,
        controller=controller,
        charlie_basis=charlie_basis,
    )
    return haar_average_fidelity(j) if inputs == "haar" else product_average_fidelity(j, 2)


# --------------------------------------------------------------------------- the controller
def no_controller_fidelity(state: StateVector) -> float:
    """Analytic fidelity of Bob's state when Charlie withholds his result: ``p0^2 + p1^2``.

    ``p_i`` is the probability that particle A of the message is found in ``|i>``. Without
    Charlie's bits the relative phase of the GHZ branches is unknown to Bob, so particle 2
    ends up fully dephased in Z while particle 4 is perfect: Bob holds
    ``sum_i (|i><i| ⊗ I) psi (|i><i| ⊗ I)``, whose overlap with ``psi`` is ``sum_i p_i^2``.

    Examples
    --------
    >>> no_controller_fidelity(StateVector([1, 0, 0, 0]))
    1.0
    >>> round(no_controller_fidelity(StateVector.bell("Phi+")), 12)
    0.5
    """
    msg = _message(state)
    p = np.sum(np.abs(msg.amplitudes.reshape(2, 2)) ** 2, axis=1)
    return float(np.sum(p**2))


def charlie_reduced_state(
    state: StateVector, *, alice_outcome: tuple[int, int] | None = None
) -> DensityMatrix:
    """Return what Charlie holds on ``(1, 3, 6)``, with or without Alice's outcomes.

    Without Alice's outcomes Charlie's state is ``(|000><000| + |111><111|)/2`` whatever the
    message (no-signalling). Knowing them, it is ``sum_i p_(i⊕x) |iii><iii|`` where ``p`` is
    the Z distribution of message particle A and ``x`` the bit-flip part of the (A, 5)
    outcome: Charlie can then sample one Z-basis measurement of A — at most one classical
    bit about the populations, nothing about phases or about particle B.

    Parameters
    ----------
    state
        The two-qubit message.
    alice_outcome
        ``(a5, b7)`` Bell outcomes Charlie was told, or ``None``.

    Examples
    --------
    >>> rho = charlie_reduced_state(StateVector([0.6, 0, 0.8, 0]), alice_outcome=(0, 0))
    >>> np.diag(rho.matrix).real.round(2)[[0, 7]].tolist()
    [0.36, 0.64]
    """
    msg = _message(state)
    full = msg.tensor_product(channel_state())
    if alice_outcome is None:
        return full.reduced_density_matrix(list(CHARLIE_PARTICLES))
    a5, b7 = alice_outcome
    _, s = full.project(["A", "5"], a5, "bell")
    _, s = s.project(["B", "7"], b7, "bell")
    return s.reduced_density_matrix(list(CHARLIE_PARTICLES))


class NoisePoint(TypedDict):
    """One point of a :func:`noise_sweep` curve."""

    strength: float
    fidelity: float


class NoiseCurve(TypedDict):
    """One curve of :func:`noise_sweep`: a noise model's fidelity against its strength."""

    model: str
    points: list[NoisePoint]


def noise_sweep(
    strengths: Sequence[float],
    models: Sequence[str] = ("amplitude-damping", "dephasing", "depolarizing"),
    *,
    noisy_particles: Sequence[str] = CHANNEL_PARTICLES,
    controller: bool = True,
    charlie_basis: str = "x",
) -> list[NoiseCurve]:
    """Exact Haar-average fidelity against noise strength, one curve per noise model.

    Returns
    -------
    list of dict
        ``{"model": name, "points": [{"strength": p, "fidelity": F}, ...]}`` per model.

    Raises
    ------
    UnknownNameError, ConfigError
        For an unknown model or a strength outside [0, 1].

    Examples
    --------
    >>> c = noise_sweep([0.0], ["dephasing"])
    >>> round(c[0]["points"][0]["fidelity"], 12)
    1.0
    """
    curves: list[NoiseCurve] = []
    for name in models:
        points: list[NoisePoint] = []
        for p in strengths:
            model = NoiseModel(name, float(p))
            f = expected_fidelity(
                noise=model,
                noisy_particles=noisy_particles,
                controller=controller,
                charlie_basis=charlie_basis,
            )
            points.append({"strength": model.strength, "fidelity": f})
        curves.append({"model": NoiseModel(name, 0.0).name, "points": points})
    return curves
