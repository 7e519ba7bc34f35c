"""Cascade information reconciliation: an interactive protocol between Alice and Bob.

Alice and Bob hold ``n``-bit keys that differ in a fraction ``Q`` (the QBER) of positions.
Cascade corrects Bob's key by comparing parities of blocks over the public channel: Bob asks,
Alice answers with parities of *her* key, Bob compares with his own and binary-searches every
block whose parities differ (BINARY) down to the wrong bit, which he flips. Each correction
changes the parity of the blocks of earlier passes that contain the bit, and those blocks are
searched again (the *cascade*). Every parity Alice sends crosses a
:class:`~qkdtwin.qkd.postprocess.channel.ClassicalChannel`, which counts it: the leakage
reported is exact.

Protocol as implemented (Brassard and Salvail 1993, with the options of Martinez-Mateo et al.
2015):

1. Pass ``i`` draws a public random permutation ``pi_i`` of the positions (from ``rng``; Bob
   announces it with his first request of that pass) and cuts the permuted key into blocks of
   ``k_i`` bits. Bob asks the parities of all blocks in one message; Alice answers in one.
2. Every block (or, with *sub-block reuse*, every already-disclosed sub-block) whose error
   parity is odd contains an error. Bob bisects all of them at once: one request per level
   lists the left halves of every search; Alice answers all of them from a prefix-XOR array of
   her permuted key; the parity of the right half follows without disclosure. A search ends
   on a single bit, which Bob flips.
3. After the flips, the known blocks of *all* passes that contain a flipped bit change parity;
   the odd ones are searched in turn, lowest pass (smallest blocks, cheapest searches) first,
   until no known block is odd. Searches of one wave lie in disjoint blocks of one pass, so
   they never interfere and each ends on a genuine error.
4. Optionally (``biconf``) BICONF iterations follow: a random half of the key is checked and,
   if its parity differs, bisected; Bob stops after a streak of error-free iterations.

Variants (:data:`CASCADE_VARIANTS`); ``Q`` is the QBER estimate given to :func:`reconcile`,
``n/2`` means ``ceil(n/2)`` and every block size is clipped to ``[1, n]``:

``original``
    Brassard-Salvail [BS93]: 4 passes, ``k_1 = ceil(0.73/Q)``, ``k_(i+1) = 2 k_i``; only
    top-level blocks trigger the cascade.
``biconf``
    "Cascade mod. (1)" of [MM15], after Sugimoto-Yamazaki [SY00] (``k_1 ~ 4 ln 2 / 3Q``): 2
    passes, ``k_1 = ceil(0.92/Q)``, ``k_2 = 3 k_1``, then BICONF iterations (a random half of
    the key checked and, if odd, bisected; corrections cascade back) until 10 in a row find no
    error; top-level blocks only.
``yanetal``
    "Cascade opt. (2)" of [MM15], from Yan et al. [Y08]: 10 passes, ``k_1 = ceil(0.8/Q)``,
    ``k_2 = 5 k_1``, ``k_i = n/2`` after; top-level blocks only.
``option7``
    "Cascade opt. (7)" of [MM15]: 14 passes, ``k_1 = 2^ceil(log2(1/Q))``, ``k_2 = 4 k_1``,
    ``k_i = n/2`` after; every disclosed sub-block triggers the cascade (*sub-block reuse*).
``option8``
    "Cascade opt. (8)" of [MM15]: 14 passes, ``k_1 = 2^ceil(a)``, ``k_2 = 2^ceil((a + 12)/2)``,
    ``k_3 = 4096``, ``k_i = n/2`` after, with ``a = log2(1/Q) - 1/2``; sub-block reuse. The
    power-of-two sizes make every bisection disclose exactly ``log2 k`` parities.
``option8-bpi`` (:data:`DEFAULT_VARIANT`)
    ``option8`` plus *parity inference*: the parity of Alice's whole key is the XOR of the
    first-pass block parities, so in every later pass the last block's parity is the XOR of
    the others' and is not sent (the AIT QKD software's Cascade [AIT] uses the same fact:
    after pass 1 the number of errors is even); and a single bit whose value was disclosed
    earlier (the last step of a search discloses one) is never asked again.

The parameters of ``biconf``, ``yanetal``, ``option7`` and ``option8`` are those of the
versions compared in [MM15] as implemented in the reproduction of its figures by Rijsman [R20];
the streak of 10 error-free BICONF iterations is Rijsman's choice. All variants shuffle the
first pass too (harmless on a memoryless channel, and it breaks up bursts of errors).

Leakage accounting: ``leaked_bits`` is the number of parity bits Alice sent, counted by the
channel as they cross it (Bob's parities are never sent; his requests reveal only which
halves of odd blocks are odd, i.e. the error pattern, which is independent of Alice's key).
No parity is ever sent twice: a parity Bob already holds, or can compute as the XOR of
parities he holds (a sibling sub-block, a last block under block-parity inference), is used
without asking.

References
----------
.. [BS93] G. Brassard and L. Salvail, "Secret-key reconciliation by public discussion",
   EUROCRYPT '93, LNCS 765, 410-423 (1994).
.. [MM15] J. Martinez-Mateo, C. Pacher, M. Peev, A. Ciurana and V. Martin, "Demystifying the
   information reconciliation protocol Cascade", Quantum Inf. Comput. 15, 453-477 (2015),
   arXiv:1407.3257 — the variants and their names (Table of Cascade versions, Sec. 4).
.. [SY00] T. Sugimoto and K. Yamazaki, "A study on secret key reconciliation protocol
   Cascade", IEICE Trans. Fundamentals E83-A(10), 1987-1991 (2000).
.. [Y08] H. Yan et al., "Information reconciliation protocol in quantum key distribution
   system", Proc. 4th Int. Conf. on Natural Computation (ICNC 2008), 637-641.
.. [AIT] AIT Austrian Institute of Technology, AIT QKD software suite, module
   ``qkd-cascade`` (P. Grabenweger, C. Pacher, O. Maurhart, 2014-2016), which implements
   opt. (8) of [MM15].
.. [R20] B. Rijsman, cascade-python (2020), https://github.com/brunorijsman/cascade-python,
   and its documentation "Comparison of results with literature".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError, ReconciliationError, UnknownNameError
from qkdtwin.qkd.postprocess.channel import ClassicalChannel

__all__ = [
    "CASCADE_VARIANTS",
    "DEFAULT_VARIANT",
    "ParityRequest",
    "ReconciliationResult",
    "cascade_block_sizes",
    "reconcile",
]

_I64 = NDArray[np.int64]  # positions; permutations are int32 below 2^31 bits
_I8 = NDArray[np.int8]
_F = TypeVar("_F", bound=Callable[..., Any])


# ============================================================================ variants
def _ceil(x: float) -> int:
    # 0.73 / 0.01 is 72.99999999999999 in binary floating point; the papers mean 73.
    return math.ceil(x - 1e-9)


def _original_k(q: float, n: int, i: int) -> int:
    return _ceil(0.73 / q) * (1 << (i - 1))  # pass i >= 1


def _biconf_k(q: float, n: int, i: int) -> int:
    return int(_ceil(0.92 / q) * 3 ** (i - 1))  # pass i >= 1: an integer


def _yanetal_k(q: float, n: int, i: int) -> int:
    k1 = _ceil(0.8 / q)
    return k1 if i == 1 else 5 * k1 if i == 2 else -(-n // 2)


def _option7_k(q: float, n: int, i: int) -> int:
    k1 = 2 ** _ceil(math.log2(1.0 / q))
    return k1 if i == 1 else 4 * k1 if i == 2 else -(-n // 2)


def _option8_k(q: float, n: int, i: int) -> int:
    a = math.log2(1.0 / q) - 0.5
    if i == 1:
        return int(2 ** _ceil(a))
    if i == 2:
        return int(2 ** _ceil((a + 12.0) / 2.0))
    return 4096 if i == 3 else -(-n // 2)


@dataclass(frozen=True)
class _Variant:
    name: str
    passes: int
    block_size: Callable[[float, int, int], int]
    subblock_reuse: bool
    parity_inference: bool
    biconf_streak: int = 0


_VARIANTS: dict[str, _Variant] = {
    v_.name: v_
    for v_ in (
        _Variant("original", 4, _original_k, subblock_reuse=False, parity_inference=False),
        _Variant(
            "biconf", 2, _biconf_k, subblock_reuse=False, parity_inference=False, biconf_streak=10
        ),
        _Variant("yanetal", 10, _yanetal_k, subblock_reuse=False, parity_inference=False),
        _Variant("option7", 14, _option7_k, subblock_reuse=True, parity_inference=False),
        _Variant("option8", 14, _option8_k, subblock_reuse=True, parity_inference=False),
        _Variant("option8-bpi", 14, _option8_k, subblock_reuse=True, parity_inference=True),
    )
}

#: Names of the Cascade variants :func:`reconcile` accepts, oldest first.
CASCADE_VARIANTS: tuple[str, ...] = tuple(_VARIANTS)

#: The variant :func:`reconcile` runs by default: the lowest leakage measured here.
DEFAULT_VARIANT = "option8-bpi"


def _clip(k: int, n: int) -> int:
    return min(max(k, 1), n)


def _get_variant(name: str) -> _Variant:
    try:
        return _VARIANTS[name]
    except (KeyError, TypeError):
        known = ", ".join(CASCADE_VARIANTS)
        raise UnknownNameError(
            f"unknown Cascade variant {name!r}; known: {known}",
            field="variant",
            value=name,
            allowed=known,
        ) from None


def cascade_block_sizes(variant: str, qber: float, n: int) -> tuple[int, ...]:
    """Block sizes of the regular passes of ``variant`` for QBER ``qber`` and ``n`` bits.

    Parameters
    ----------
    variant
        One of :data:`CASCADE_VARIANTS`.
    qber
        The QBER estimate, in (0, 0.5).
    n
        Key length in bits, ``>= 1``.

    Returns
    -------
    tuple of int
        ``k_1, k_2, ...``, one per regular pass, each clipped to ``[1, n]`` (BICONF
        iterations, if any, come after them and check random halves).

    Raises
    ------
    ConfigError
        If ``qber`` is not in (0, 0.5) or ``n < 1``.
    UnknownNameError
        If ``variant`` is unknown.

    Examples
    --------
    >>> cascade_block_sizes("original", 0.02, 10**5)
    (37, 74, 148, 296)
    >>> cascade_block_sizes("option8", 0.02, 10**5)[:4]
    (64, 512, 4096, 50000)
    """
    spec = _get_variant(variant)
    q = v.in_range("qber", qber, 0.0, 0.5, low_open=True, high_open=True)
    if int(n) < 1:
        raise ConfigError(f"n must be >= 1, got {n!r}", field="n", value=n, allowed=">= 1")
    return tuple(_clip(spec.block_size(q, int(n), i), int(n)) for i in range(1, spec.passes + 1))


# ============================================================================ results
@dataclass(frozen=True, eq=False)
class ReconciliationResult:
    """The outcome of one Cascade run on one frame.

    Attributes
    ----------
    corrected
        Bob's key after reconciliation (equal to Alice's unless the frame failed; a failed
        frame keeps an even number >= 2 of residual errors that no disclosed parity sees).
    leaked_bits
        Parity bits Alice disclosed, counted on the channel.
    messages
        Messages exchanged (both directions).
    rounds
        Request/answer round trips.
    passes
        Passes run, BICONF iterations included.
    variant
        The variant's name.
    corrections
        Bits Bob flipped (each one a genuine error).
    """

    corrected: NDArray[np.uint8] = field(repr=False)
    leaked_bits: int
    messages: int
    rounds: int
    passes: int
    variant: str
    corrections: int

    def efficiency(self, true_qber: float) -> float:
        """Reconciliation efficiency ``f = leaked_bits / (n h2(true_qber))``.

        ``f = 1`` is the Slepian-Wolf limit; the key-length formula subtracts
        ``f n h2(Q)`` for error correction.

        Parameters
        ----------
        true_qber
            The actual error fraction of the frame (errors / n), in (0, 0.5).

        Raises
        ------
        ConfigError
            If ``true_qber`` is not in (0, 0.5).
        """
        q = v.in_range("true_qber", true_qber, 0.0, 0.5, low_open=True, high_open=True)
        h = -q * math.log2(q) - (1.0 - q) * math.log2(1.0 - q)
        return self.leaked_bits / (self.corrected.size * h)


@dataclass(frozen=True, eq=False)
class ParityRequest:
    """Bob's request for parities of Alice's key, as it travels on the channel.

    Attributes
    ----------
    pass_id
        The pass whose permutation defines the ranges.
    starts, ends
        Half-open ranges ``[start, end)`` of positions *in the permuted order* of the pass.
    shuffle
        The pass's permutation (``permuted position -> key position``) when this is the
        first request of the pass, else ``None``.
    """

    pass_id: int
    starts: _I64
    ends: _I64
    shuffle: _I64 | None = None


# ============================================================================ kernels
# Bob's per-round bookkeeping loops over the live searches; they run compiled by numba when it
# is installed (the same source runs as plain Python otherwise, slowly but identically).
def _jit(f: _F) -> _F:
    """Compile ``f`` with numba (cached on disk) when numba is installed, else return it."""
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - exercised only where numba is absent
        return f
    return cast(_F, njit(cache=True)(f))


@_jit
def _k_plan(
    known: _I8,
    base: _I64,
    h: _I64,
    s: _I64,
    e: _I64,
    apar: _I8,
    perm: _I64,
    alice_bits: _I8,
    infer_bits: bool,
    m_out: _I64,
    kl_out: _I8,
) -> int:
    """Split every live search node at its midpoint (``m_out``).

    ``kl_out`` receives Alice's parity of each left half where Bob already holds it or can
    infer it (from the right half, or from a disclosed single bit), else -1. Returns how many
    must be asked.
    """
    need = 0
    for i in range(s.size):
        si, ei = s[i], e[i]
        m = si + (ei - si + 1) // 2
        lk = base[i] + 2 * h[i]
        kl = np.int64(known[lk])
        kr = np.int64(known[lk + 1])
        if infer_bits:
            if kl < 0 and m - si == 1:
                kl = np.int64(alice_bits[perm[si]])
            if kr < 0 and ei - m == 1:
                kr = np.int64(alice_bits[perm[m]])
        if kl < 0 and kr >= 0:
            kl = np.int64(apar[i]) ^ kr
        m_out[i] = m
        kl_out[i] = kl
        if kl < 0:
            need += 1
    return need


@_jit
def _k_bob_parity(bpref: NDArray[np.uint8], pending: _I64, s: int, e: int) -> int:
    """Bob's parity of permuted ``[s, e)``: prefix XOR corrected by the flips since."""
    par = np.int64(bpref[e]) ^ np.int64(bpref[s])
    if pending.size:
        par ^= np.int64(np.searchsorted(pending, e) - np.searchsorted(pending, s)) & 1
    return int(par)


@_jit
def _k_advance(
    known: _I8,
    base: _I64,
    h: _I64,
    s: _I64,
    e: _I64,
    apar: _I8,
    m_arr: _I64,
    kl_arr: _I8,
    perm: _I64,
    alice_bits: _I8,
    bpref: NDArray[np.uint8],
    pending: _I64,
    leaves: _I64,
) -> tuple[int, int]:
    """Step every search into its half with odd error parity.

    Records both halves' Alice parities, compacts the searches still alive to the front of the
    arrays and writes the key positions of those that reached a single bit to ``leaves``.
    Returns ``(alive, found)``.
    """
    live = 0
    found = 0
    for i in range(s.size):
        si, ei, m = s[i], e[i], m_arr[i]
        kl = np.int64(kl_arr[i])
        kr = np.int64(apar[i]) ^ kl
        lk = base[i] + 2 * h[i]
        known[lk] = kl
        known[lk + 1] = kr
        if m - si == 1:
            alice_bits[perm[si]] = kl
        if ei - m == 1:
            alice_bits[perm[m]] = kr
        if (kl ^ _k_bob_parity(bpref, pending, si, m)) == 0:
            si, hi, ai = m, 2 * h[i] + 1, kr
        else:
            ei, hi, ai = m, 2 * h[i], kl
        if ei - si == 1:
            leaves[found] = perm[si]
            found += 1
        else:
            base[live] = base[i]
            h[live] = hi
            s[live] = si
            e[live] = ei
            apar[live] = ai
            live += 1
    return live, found


@_jit
def _k_odd_known(
    known: _I8,
    width: int,
    k: int,
    n: int,
    inv: _I64,
    bpref: NDArray[np.uint8],
    pending: _I64,
    positions: _I64,
    all_levels: bool,
    out_key: _I64,
    out_s: _I64,
    out_e: _I64,
) -> int:
    """Known nodes on the root-to-leaf paths of ``positions`` whose error parity is odd.

    Known nodes form a subtree from the root of each block (a node is learnt only as a child
    of a known node), so each walk stops at the first unknown node.
    """
    count = 0
    for x in positions:
        p = inv[x]
        blk = p // k
        si = blk * k
        ei = min(si + k, n)
        hi = 1
        while True:
            key = blk * width + hi
            a = np.int64(known[key])
            if a < 0:
                break
            if (a ^ _k_bob_parity(bpref, pending, si, ei)) == 1:
                out_key[count] = key
                out_s[count] = si
                out_e[count] = ei
                count += 1
            if not all_levels or ei - si == 1:
                break
            m = si + (ei - si + 1) // 2
            if p >= m:
                si = m
                hi = 2 * hi + 1
            else:
                ei = m
                hi = 2 * hi
    return count


@_jit
def _k_permuted_prefix(bits: NDArray[np.uint8], perm: _I64) -> NDArray[np.uint8]:
    """Prefix XOR of ``bits[perm]``: the parity of permuted ``[s, e)`` is ``out[e] ^ out[s]``."""
    out = np.empty(perm.size + 1, dtype=np.uint8)
    acc = np.uint8(0)
    out[0] = acc
    for i in range(perm.size):
        acc ^= bits[perm[i]]
        out[i + 1] = acc
    return out


@_jit
def _k_inverse(perm: _I64) -> _I64:
    """Return the inverse permutation (key position -> permuted position)."""
    inv = np.empty(perm.size, dtype=perm.dtype)
    for i in range(perm.size):
        inv[perm[i]] = i
    return inv


@_jit
def _k_range_parities(prefix: NDArray[np.uint8], s: _I64, e: _I64, out: NDArray[np.uint8]) -> bool:
    """Parities of ``[s[i], e[i])`` from a prefix XOR; False if a range is empty or outside."""
    n = prefix.size - 1
    for i in range(s.size):
        si, ei = s[i], e[i]
        if si < 0 or ei > n or ei <= si:
            return False
        out[i] = prefix[ei] ^ prefix[si]
    return True


# ============================================================================ the parties
class _Alice:
    """Holds Alice's key and answers parity requests through the channel."""

    def __init__(self, key: NDArray[np.uint8], channel: ClassicalChannel) -> None:
        self._key = key
        self._channel = channel
        self._prefix: dict[int, NDArray[np.uint8]] = {}

    def answer(self, req: ParityRequest) -> NDArray[np.uint8]:
        n = self._key.size
        if req.shuffle is not None:
            if req.shuffle.shape != (n,):
                raise ReconciliationError(f"pass {req.pass_id}: shuffle is not of length {n}")
            self._prefix[req.pass_id] = _k_permuted_prefix(self._key, req.shuffle)
        prefix = self._prefix.get(req.pass_id)
        if prefix is None:
            raise ReconciliationError(f"parity request for unannounced pass {req.pass_id}")
        s, e = req.starts, req.ends
        out = np.empty(s.size, dtype=np.uint8)
        if s.shape != e.shape or not _k_range_parities(prefix, s, e, out):
            raise ReconciliationError("parity request with a range outside the key or empty")
        return self._channel.send_parities("alice", out)


class _Pass:
    """One pass: its permutation, its blocks, and every Alice parity known about them.

    Sub-blocks are the nodes of the bisection tree of each block, numbered heap-style
    (root 1, children ``2h`` and ``2h + 1``; a node ``[s, e)`` splits at
    ``s + ceil((e - s) / 2)``). ``known[block * width + h]`` is Alice's parity of that node,
    or -1 while unknown. Bob's parities come from a prefix-XOR of his permuted key plus the
    positions he flipped since it was built (``pending``, sorted).
    """

    _REBUILD = 512

    def __init__(self, pass_id: int, perm: _I64, k: int, bob: NDArray[np.uint8]) -> None:
        n = perm.size
        self.id = pass_id
        self.perm = perm
        self.inv = _k_inverse(perm)
        self.n = n
        self.k = k
        self.nblocks = -(-n // k)
        self.width = 2 << max(k - 1, 0).bit_length()
        self.known: _I8 = np.full(self.nblocks * self.width, -1, dtype=np.int8)
        self.bpref = _k_permuted_prefix(bob, perm)
        self.pending: _I64 = np.empty(0, dtype=np.int64)
        self.announced = False

    def roots(self) -> tuple[_I64, _I64, _I64]:
        b = np.arange(self.nblocks, dtype=np.int64)
        s = b * self.k
        return b * self.width + 1, s, np.minimum(s + self.k, self.n)

    def bob_parity(self, s: _I64, e: _I64) -> _I8:
        par = (self.bpref[e] ^ self.bpref[s]).astype(np.int8)
        if self.pending.size:
            cnt = np.searchsorted(self.pending, e) - np.searchsorted(self.pending, s)
            par ^= (cnt & 1).astype(np.int8)
        return par

    def flipped(self, positions: _I64, bob: NDArray[np.uint8]) -> None:
        """Record Bob's flips (``bob`` already updated)."""
        if self.pending.size + positions.size > self._REBUILD:
            self.bpref = _k_permuted_prefix(bob, self.perm)
            self.pending = np.empty(0, dtype=np.int64)
        else:
            self.pending = np.sort(np.concatenate((self.pending, self.inv[positions])))

    def odd_known_nodes(self, positions: _I64, all_levels: bool) -> tuple[_I64, _I64, _I64]:
        """Known nodes containing any of ``positions`` whose error parity is now odd."""
        size = positions.size * (self.width.bit_length() if all_levels else 1)
        key = np.empty(size, dtype=np.int64)
        s = np.empty(size, dtype=np.int64)
        e = np.empty(size, dtype=np.int64)
        count = _k_odd_known(
            self.known, self.width, self.k, self.n, self.inv, self.bpref, self.pending,
            positions, all_levels, key, s, e,
        )  # fmt: skip
        return key[:count], s[:count], e[:count]


class _Bob:
    """Holds Bob's key; drives the protocol: requests parities, bisects, corrects."""

    def __init__(
        self,
        key: NDArray[np.uint8],
        spec: _Variant,
        qber: float,
        rng: np.random.Generator,
        channel: ClassicalChannel,
        alice: _Alice,
    ) -> None:
        self.key = key
        self.n = key.size
        self.spec = spec
        self.qber = qber
        self.rng = rng
        self.channel = channel
        self.alice = alice
        self.passes: list[_Pass] = []
        self.cands: list[list[tuple[_I64, _I64, _I64]]] = []
        # Alice's bits whose value has been disclosed (single-bit sub-blocks), else -1.
        self.alice_bits: _I8 = np.full(self.n, -1, dtype=np.int8)
        self.total: int | None = None  # parity of Alice's whole key, once inferable
        self.rounds = 0
        self.corrections = 0

    # ------------------------------------------------------------------ messaging
    def ask(self, pas: _Pass, starts: _I64, ends: _I64) -> _I8:
        shuffle = None if pas.announced else pas.perm
        pas.announced = True
        req = self.channel.send("bob", "request", ParityRequest(pas.id, starts, ends, shuffle))
        ans = self.alice.answer(req)
        if ans.shape != starts.shape:
            raise ReconciliationError("answer length does not match the request")
        self.rounds += 1
        return ans.astype(np.int8)

    # ------------------------------------------------------------------ protocol
    def run(self) -> int:
        q, n = self.qber, self.n
        for i in range(1, self.spec.passes + 1):
            k = _clip(self.spec.block_size(q, n, i), n)
            self.new_pass(k, partial=False)
            self.settle()
        streak = 0
        while streak < self.spec.biconf_streak:
            before = self.corrections
            self.new_pass(-(-n // 2), partial=True)
            self.settle()
            streak = streak + 1 if self.corrections == before else 0
        return len(self.passes)

    def new_pass(self, k: int, *, partial: bool) -> None:
        # int32 halves the memory of the permutations (two per pass) for keys below 2^31 bits.
        perm = self.rng.permutation(self.n)
        if self.n < 2**31:
            perm = perm.astype(np.int32)
        pas = _Pass(len(self.passes), perm, k, self.key)
        self.passes.append(pas)
        self.cands.append([])
        keys, s, e = pas.roots()
        vals = np.full(keys.size, -1, dtype=np.int8)
        if self.spec.parity_inference:  # a one-bit block whose value was disclosed: free
            lone = np.flatnonzero((e - s) == 1)
            vals[lone] = self.alice_bits[perm[s[lone]]]
        todo = np.flatnonzero(vals < 0)
        # The XOR of a pass's block parities is the parity of the whole key (known after the
        # first pass): with parity inference the last unknown block is never asked.
        infer = self.spec.parity_inference and self.total is not None and todo.size > 0
        if partial and not infer:
            todo = todo[todo == 0]  # BICONF checks the first block, a random half, only
        last = int(todo[-1]) if infer else -1
        if infer:
            todo = todo[:-1]
        if todo.size:
            vals[todo] = self.ask(pas, s[todo], e[todo])
        if infer:
            vals[last] = 0
            vals[last] = int(np.bitwise_xor.reduce(vals)) ^ (self.total or 0)
        checked = vals >= 0
        keys, s, e = keys[checked], s[checked], e[checked]
        pas.known[keys] = vals[checked]
        if self.total is None:
            self.total = int(np.bitwise_xor.reduce(vals))
        self.cands[pas.id].append((keys, s, e))

    def settle(self) -> None:
        """Correct until no known block (sub-block, with reuse) has odd error parity."""
        while True:
            j = next((i for i, c in enumerate(self.cands) if c), None)
            if j is None:
                return
            pas = self.passes[j]
            parts = self.cands[j]
            self.cands[j] = []
            keys = np.concatenate([c[0] for c in parts])
            s = np.concatenate([c[1] for c in parts])
            e = np.concatenate([c[2] for c in parts])
            keys, first = np.unique(keys, return_index=True)
            s, e = s[first], e[first]
            odd = (pas.known[keys] ^ pas.bob_parity(s, e)) == 1
            keys, s, e = keys[odd], s[odd], e[odd]
            if not keys.size:
                continue
            if self.spec.subblock_reuse:
                keys, s, e = _innermost(keys, s, e, pas.width)
            flips = self.bisect(pas, keys, s, e)
            self.key[flips] ^= 1
            self.corrections += int(flips.size)
            for other in self.passes:
                other.flipped(flips, self.key)
            for other in self.passes:
                found = other.odd_known_nodes(flips, self.spec.subblock_reuse)
                if found[0].size:
                    self.cands[other.id].append(found)

    def bisect(self, pas: _Pass, keys: _I64, s: _I64, e: _I64) -> _I64:
        """BINARY on every node at once (disjoint, odd); return the error positions found.

        One round trip per level: the left halves Bob cannot infer are asked together.
        """
        known, perm = pas.known, pas.perm
        blk, h = np.divmod(keys, pas.width)
        base = blk * pas.width
        apar = known[keys]
        s = s.copy()
        e = e.copy()
        leaf = (e - s) == 1
        found = [perm[s[leaf]]]
        if leaf.any():
            keep = ~leaf
            base, h, s, e, apar = base[keep], h[keep], s[keep], e[keep], apar[keep]
        live = base.size
        m = np.empty(live, dtype=np.int64)
        kl = np.empty(live, dtype=np.int8)
        leaves = np.empty(live, dtype=np.int64)
        infer = self.spec.parity_inference
        while live:
            lb, lh, ls, le, la = base[:live], h[:live], s[:live], e[:live], apar[:live]
            lm, lkl = m[:live], kl[:live]
            if _k_plan(known, lb, lh, ls, le, la, perm, self.alice_bits, infer, lm, lkl):
                need = lkl < 0
                lkl[need] = self.ask(pas, ls[need], lm[need])
            live, nfound = _k_advance(
                known, lb, lh, ls, le, la, lm, lkl, perm, self.alice_bits, pas.bpref,
                pas.pending, leaves,
            )  # fmt: skip
            if nfound:
                found.append(leaves[:nfound].copy())
        return np.concatenate(found)


def _innermost(keys: _I64, s: _I64, e: _I64, width: int) -> tuple[_I64, _I64, _I64]:
    """Drop nodes that contain another node of the (sorted, unique) set: search the inner one.

    Nested searches would race for the same error; the outer node is re-examined after the
    inner one is corrected, because the correction flips its parity too.
    """
    blk, h = np.divmod(keys, width)
    outer = np.zeros(keys.size, dtype=bool)
    anc = h >> 1
    while True:
        live = anc > 0
        if not live.any():
            break
        akeys = blk[live] * width + anc[live]
        idx = np.searchsorted(keys, akeys)
        idx = np.minimum(idx, keys.size - 1)
        hit = keys[idx] == akeys
        outer[idx[hit]] = True
        anc = anc >> 1
    keep = ~outer
    return keys[keep], s[keep], e[keep]


# ============================================================================ entry point
def _bits(name: str, x: ArrayLike) -> NDArray[np.uint8]:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D array of bits", field=name, allowed="1-D")
    if arr.size == 0:
        raise ConfigError(f"{name} is empty", field=name, value=x, allowed="at least 1 bit")
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(
            f"{name} must hold integers 0/1, got dtype {arr.dtype}", field=name, allowed="{0, 1}"
        )
    if int(arr.min()) < 0 or int(arr.max()) > 1:
        raise ConfigError(f"{name} must contain only 0 and 1", field=name, allowed="{0, 1}")
    return arr.astype(np.uint8)


def reconcile(
    alice: ArrayLike,
    bob: ArrayLike,
    qber: float,
    *,
    variant: str = DEFAULT_VARIANT,
    rng: np.random.Generator,
    channel: ClassicalChannel | None = None,
) -> ReconciliationResult:
    """Reconcile Bob's key with Alice's by Cascade over a public channel.

    Parameters
    ----------
    alice
        Alice's sifted key, 1-D array of 0/1 (never modified; only parities of it leave).
    bob
        Bob's sifted key, same length (not modified; the result holds the corrected copy).
    qber
        The QBER *estimate* used to choose block sizes, in (0, 0.5).
    variant
        One of :data:`CASCADE_VARIANTS` (default :data:`DEFAULT_VARIANT`).
    rng
        Source of the public random permutations (shared randomness: Bob announces them).
    channel
        The public channel; a fresh one when omitted. Pass your own to keep one ledger over
        many frames or to record a transcript.

    Returns
    -------
    ReconciliationResult
        Bob's corrected key and the exact cost of the exchange.

    Raises
    ------
    ConfigError
        If a key is empty, not 1-D, not binary, or the lengths differ; if ``qber`` is not in
        (0, 0.5); if ``rng`` is not a :class:`numpy.random.Generator`.
    UnknownNameError
        If ``variant`` is unknown (the message lists the known ones).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(7)
    >>> alice = rng.integers(0, 2, 10_000, dtype=np.uint8)
    >>> bob = alice.copy()
    >>> bob[rng.choice(alice.size, 300, replace=False)] ^= 1          # QBER 3 %
    >>> res = reconcile(alice, bob, 0.03, rng=rng)
    >>> bool(np.array_equal(res.corrected, alice)), res.corrections
    (True, 300)
    >>> 1.0 < res.efficiency(0.03) < 1.15
    True

    Notes
    -----
    Complexity: O(n) memory per pass, O(n) work per pass for the permutation and the prefix
    XORs, plus O(log k) vectorised steps per search level; all searches of a wave share each
    round trip, so the number of rounds grows with the number of passes and waves, not with
    the number of errors.

    A frame can fail: an even number of errors may hide from every parity Cascade checks.
    The probability (the frame error rate) is small and falls with more passes; verify the
    reconciled keys with a universal hash before using them.
    """
    a = _bits("alice", alice)
    b = _bits("bob", bob)
    if a.size != b.size:
        raise ConfigError(
            f"alice and bob must have the same length, got {a.size} and {b.size}",
            field="bob",
            value=b.size,
            allowed=f"length {a.size}",
        )
    q = v.in_range("qber", qber, 0.0, 0.5, low_open=True, high_open=True)
    spec = _get_variant(variant)
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            "rng must be a numpy.random.Generator", field="rng", value=rng, allowed="Generator"
        )
    ch = ClassicalChannel() if channel is None else channel
    leaked0, messages0 = ch.leaked_bits, ch.messages
    alice_party = _Alice(a, ch)
    bob_party = _Bob(b.copy(), spec, q, rng, ch, alice_party)
    passes = bob_party.run()
    return ReconciliationResult(
        corrected=bob_party.key,
        leaked_bits=ch.leaked_bits - leaked0,
        messages=ch.messages - messages0,
        rounds=bob_party.rounds,
        passes=passes,
        variant=spec.name,
        corrections=bob_party.corrections,
    )
