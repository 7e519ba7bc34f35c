"""From sifted bits to identical secret keys: estimate, reconcile, verify, amplify.

:func:`postprocess` takes the sifted key of a simulated link (``simulate_link(...,
keep_bits=True)``) and runs the whole classical chain the way a real system does:

1. **Parameter estimation.** Decoy-state BB84: the X-basis detections and errors of every
   intensity and the Z-basis detection counts (all public) feed Lim et al.'s finite-key bounds;
   the key is made of the Z-basis bits of all intensities. Other protocols: a random sample of
   the sifted bits is disclosed, and the Serfling bound caps the error rate of the rest. The
   protocol aborts when the bound exceeds the threshold (11 %).
2. **Reconciliation**, frame by frame, with Cascade over an explicit public channel; the
   leaked parity bits are counted exactly.
3. **Verification** of each frame with a polynomial hash; a frame that fails is discarded and
   counted, never passed on.
4. **Privacy amplification** of all verified frames at once with one Toeplitz hash, to the
   length given by the finite-key formula (Lim et al. 2014 for decoy-state BB84, Tomamichel et
   al. 2012 otherwise) with the exact leakage.

**Failed frames, provably** (``PostprocessConfig.failed_frames``). The finite-key bound is a
bound on the smooth min-entropy of the *whole* block's key bits given Eve. Keeping only the
verified frames and scaling the bound by the fraction kept (what this module did before) is not
a proven bound: the failed frames are chosen by an event that depends on the errors. Two
provable treatments:

* ``"disclose"`` (default): the failed frames' bits are counted as disclosed to Eve. By the
  chain rule of the smooth min-entropy, ``H_min(kept | E, failed) >= H_min(all | E) -
  |failed|``, so the bound of the whole block is used with the leakage increased by the
  number of failed bits, and the kept bits are hashed to that length. No epsilon changes:
  ``eps_sec`` is the whole block's (the chain rule is deterministic), and ``eps_cor`` still
  splits over all frames, the kept ones each verified at ``eps_cor / frames``.
* ``"abort"``: a block with a failed frame gives no key at all (``aborted``).
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np
from numpy.typing import NDArray

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError
from qkdtwin.qkd.link import LinkResult, SiftedKey
from qkdtwin.qkd.model import LinkModel
from qkdtwin.qkd.postprocess.amplify import ToeplitzHasher, toeplitz_seed_length
from qkdtwin.qkd.postprocess.cascade import CASCADE_VARIANTS, DEFAULT_VARIANT, reconcile
from qkdtwin.qkd.postprocess.channel import ClassicalChannel
from qkdtwin.qkd.postprocess.estimate import sample_qber
from qkdtwin.qkd.postprocess.finite_key import (
    DecoyCounts,
    h2,
    lim_decoy_key_length,
    tomamichel_key_length,
)
from qkdtwin.qkd.postprocess.verify import verify_keys
from qkdtwin.qkd.source import WeakCoherentSource

__all__ = [
    "FAILED_FRAME_TREATMENTS",
    "PostprocessConfig",
    "PostprocessResult",
    "finite_key_estimate",
    "postprocess",
    "secure_length",
    "write_keys",
]

SUPPORTED = ("bb84", "decoy-bb84", "bbm92", "e91")
#: How a frame that fails verification is paid for (see the module docstring).
FAILED_FRAME_TREATMENTS = ("disclose", "abort")


@dataclass(frozen=True)
class PostprocessConfig:
    """Parameters of the classical post-processing.

    Attributes
    ----------
    reconciliation
        Cascade variant (see :data:`~qkdtwin.qkd.postprocess.cascade.CASCADE_VARIANTS`).
    frame_bits
        Reconciliation frame size in bits.
    sample_fraction
        Fraction of the sifted bits disclosed for QBER estimation (not decoy-bb84).
    eps_sec, eps_cor
        Secrecy and correctness parameters of the final key, in (0, 1).
    abort_threshold
        Abort when the estimated QBER bound exceeds this.
    failed_frames
        What a frame that fails verification costs (module docstring): ``"disclose"``
        (default; its bits count as leaked) or ``"abort"`` (the block gives no key).
    """

    reconciliation: str = DEFAULT_VARIANT
    frame_bits: int = 100_000
    sample_fraction: float = 0.1
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    abort_threshold: float = 0.11
    failed_frames: str = "disclose"

    def __post_init__(self) -> None:
        if self.reconciliation not in CASCADE_VARIANTS:
            from qkdtwin.errors import UnknownNameError

            known = ", ".join(CASCADE_VARIANTS)
            raise UnknownNameError(
                f"unknown reconciliation {self.reconciliation!r} (known: {known})",
                field="reconciliation",
                value=self.reconciliation,
                allowed=known,
            )
        v.in_range("frame_bits", self.frame_bits, 64)
        v.in_range("sample_fraction", self.sample_fraction, 0.0, 1.0, low_open=True, high_open=True)
        v.in_range("eps_sec", self.eps_sec, 0.0, 1.0, low_open=True, high_open=True)
        v.in_range("eps_cor", self.eps_cor, 0.0, 1.0, low_open=True, high_open=True)
        v.in_range("abort_threshold", self.abort_threshold, 0.0, 0.5, low_open=True)
        if self.failed_frames not in FAILED_FRAME_TREATMENTS:
            raise ConfigError(
                f"failed_frames must be one of {', '.join(FAILED_FRAME_TREATMENTS)}, "
                f"got {self.failed_frames!r}",
                field="failed_frames",
                value=self.failed_frames,
                allowed=", ".join(FAILED_FRAME_TREATMENTS),
            )


class FiniteKeyAnalysis(TypedDict):
    """The finite-key analysis of a block (:func:`secure_length`): ``analysis`` names it.

    Lim et al. 2014 adds its bounds (``s0``, ``s1``, ``s1_x``, ``v1``, ``phi``:
    :class:`~qkdtwin.qkd.postprocess.finite_key.LimBounds`); Tomamichel et al. 2012 with GLLP
    tagging adds ``multi_photon_fraction``.
    """

    analysis: str
    s0: NotRequired[float]
    s1: NotRequired[float]
    s1_x: NotRequired[float]
    v1: NotRequired[float]
    phi: NotRequired[float]
    multi_photon_fraction: NotRequired[float]


class FiniteKeyEstimate(FiniteKeyAnalysis):
    """Result of :func:`finite_key_estimate` (``bits``: ``None`` without an analysis).

    ``leak_ec_bits`` is left out when the protocol has no finite-key analysis here.
    """

    eps_sec: float
    eps_cor: float
    bits: int | None
    leak_ec_bits: NotRequired[float]


class FailedFrames(TypedDict):
    """How the frames that failed verification were paid for."""

    treatment: str
    frames: int
    bits_counted_as_disclosed: int


class ChannelUse(TypedDict):
    """Messages and round trips on the classical channel."""

    messages: int
    rounds: int


class PostprocessDetails(TypedDict, total=False):
    """Details of a post-processing run that got past estimation (none when it aborted)."""

    failed_frames: FailedFrames
    finite_key: FiniteKeyAnalysis
    channel: ChannelUse
    errors_corrected_fraction: float


class PostprocessResultDict(PostprocessDetails):
    """JSON-ready summary of a :class:`PostprocessResult` (:meth:`PostprocessResult.to_dict`)."""

    sifted_bits: int
    key_bits_in: int
    qber_estimate: float
    qber_upper: float
    true_qber: float
    leaked_bits: int
    verification_bits: int
    reconciliation: str
    reconciliation_efficiency: float | None
    frames: int
    frames_failed: int
    frame_error_rate: float
    verified: bool
    final_key_bits: int
    keys_identical: bool
    secret_key_rate_bps: float
    aborted: bool
    abort_reason: str | None
    elapsed_s: float


@dataclass
class PostprocessResult:
    """Outcome of :func:`postprocess` (keys included; ``to_dict`` leaves them out)."""

    sifted_bits: int
    key_bits_in: int
    qber_estimate: float
    qber_upper: float
    true_qber: float
    leaked_bits: int
    verification_bits: int
    reconciliation_efficiency: float | None
    frames: int
    frames_failed: int
    verified: bool
    final_key_bits: int
    keys_identical: bool
    secret_key_rate_bps: float
    aborted: bool
    abort_reason: str | None
    reconciliation: str
    elapsed_s: float
    details: PostprocessDetails = field(default_factory=PostprocessDetails)
    alice_key: NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, np.uint8))
    bob_key: NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, np.uint8))

    @property
    def frame_error_rate(self) -> float:
        """Fraction of reconciled frames that failed verification."""
        return self.frames_failed / self.frames if self.frames else 0.0

    def to_dict(self) -> PostprocessResultDict:
        """JSON-ready summary (the ``postprocess`` object of ``link simulate --json``)."""
        return {
            "sifted_bits": self.sifted_bits,
            "key_bits_in": self.key_bits_in,
            "qber_estimate": self.qber_estimate,
            "qber_upper": self.qber_upper,
            "true_qber": self.true_qber,
            "leaked_bits": self.leaked_bits,
            "verification_bits": self.verification_bits,
            "reconciliation": self.reconciliation,
            "reconciliation_efficiency": self.reconciliation_efficiency,
            "frames": self.frames,
            "frames_failed": self.frames_failed,
            "frame_error_rate": self.frame_error_rate,
            "verified": self.verified,
            "final_key_bits": self.final_key_bits,
            "keys_identical": self.keys_identical,
            "secret_key_rate_bps": self.secret_key_rate_bps,
            "aborted": self.aborted,
            "abort_reason": self.abort_reason,
            "elapsed_s": self.elapsed_s,
            **self.details,
        }


def _frames(n: int, frame_bits: int) -> list[tuple[int, int]]:
    """Split ``n`` bits into frames of ``frame_bits``; a short tail joins the last frame."""
    count = max(1, n // frame_bits)
    edges = [i * frame_bits for i in range(count)] + [n]
    return list(itertools.pairwise(edges))


def secure_length(
    result: LinkResult,
    model: LinkModel,
    leak_bits: float,
    *,
    n_key: int,
    k_sample: int,
    qber: float,
    eps_sec: float,
    eps_cor: float,
    counts: DecoyCounts | None = None,
) -> tuple[int, FiniteKeyAnalysis]:
    """Finite-key length (bits) of a block: Lim et al. 2014 (decoy) or Tomamichel et al. 2012.

    Parameters
    ----------
    result, model
        The run and its link (the source decides GLLP tagging for weak coherent pulses).
    leak_bits
        Bits disclosed by error correction and verification (and failed frames).
    n_key, k_sample, qber
        Key bits of the block, bits sampled for the phase-error estimate and their error
        rate (not used with ``counts``).
    eps_sec, eps_cor
        Secrecy and correctness parameters.
    counts
        Decoy-state BB84: the block's detection and error counts per intensity.

    Returns
    -------
    (int, dict)
        The length (>= 0) and the analysis' details (``analysis`` names it).
    """
    if counts is not None:
        length, lim = lim_decoy_key_length(counts, leak_bits, eps_sec=eps_sec, eps_cor=eps_cor)
        return max(0, length), {
            "analysis": "Lim et al. 2014",
            "s0": lim["s0"],
            "s1": lim["s1"],
            "s1_x": lim["s1_x"],
            "v1": lim["v1"],
            "phi": lim["phi"],
        }
    src = model.source
    if isinstance(src, WeakCoherentSource):
        # GLLP tagging: only single-photon signals are secure; Delta from the gain
        mu = float(src.mu)
        p_multi = 1.0 - math.exp(-mu) - mu * math.exp(-mu)
        gain = result.details["per_intensity"][0]["gain"]
        delta = min(1.0, p_multi / gain) if gain > 0 else 1.0
        n_single = math.floor(n_key * (1.0 - delta))
        q_single = min(0.5, qber / (1.0 - delta)) if delta < 1 else 0.5
        length = tomamichel_key_length(
            n_single, k_sample, q_single, leak_bits, eps_sec=eps_sec, eps_cor=eps_cor
        )
        return max(0, length), {
            "analysis": "Tomamichel et al. 2012 with GLLP tagging",
            "multi_photon_fraction": delta,
        }
    # single photons (SinglePhotonSource) and entangled pairs: no tagging needed
    length = tomamichel_key_length(
        n_key, k_sample, min(qber, 0.5), leak_bits, eps_sec=eps_sec, eps_cor=eps_cor
    )
    return max(0, length), {"analysis": "Tomamichel et al. 2012"}


def finite_key_estimate(
    result: LinkResult,
    model: LinkModel,
    *,
    eps_sec: float = 1e-10,
    eps_cor: float = 1e-15,
    sample_fraction: float = 0.1,
) -> FiniteKeyEstimate:
    """Return the secure key a run's counts would give, without running the classical chain.

    What :func:`postprocess` would distil from this block if error correction leaked what the
    link model's efficiency ``f`` says (``f n h2(Q)`` bits) and no frame failed: Lim et al.
    2014 for decoy-state BB84 (the key: the Z-basis bits of every intensity), Tomamichel et
    al. 2012 otherwise (a ``sample_fraction`` of the sifted bits disclosed for estimation).
    This is the number to quote for a simulated block; its asymptotic rate is a diagnostic.

    Returns
    -------
    dict
        ``bits`` (0 where the block is too small), ``analysis``, ``eps_sec``, ``eps_cor``,
        ``leak_ec_bits`` (the estimate used); for a protocol with no finite-key analysis here
        (sarg04) ``bits`` is ``None``.
    """
    if result.protocol not in SUPPORTED:
        return {
            "eps_sec": eps_sec,
            "eps_cor": eps_cor,
            "bits": None,
            "analysis": f"none for {result.protocol}",
        }
    f = float(model.ec_efficiency)
    counts = None
    if result.protocol == "decoy-bb84":
        counts = _decoy_counts(result, model)
        rows = result.details["per_intensity"]
        n_key = int(sum(counts.n_z))
        errors = sum(float(r["errors_zz"]) for r in rows)
        q = errors / n_key if n_key else 0.5
        k = 0
    else:
        n_sifted = int(result.sifted_bits)
        k = round(n_sifted * sample_fraction)
        n_key = n_sifted - k
        q = float(result.qber)
    leak = f * n_key * h2(min(q, 0.5))
    if n_key <= 0:
        return {
            "eps_sec": eps_sec,
            "eps_cor": eps_cor,
            "bits": 0,
            "analysis": "empty block",
            "leak_ec_bits": 0.0,
        }
    length, details = secure_length(
        result, model, leak, n_key=n_key, k_sample=k, qber=q,
        eps_sec=eps_sec, eps_cor=eps_cor, counts=counts,
    )  # fmt: skip
    return {
        "eps_sec": eps_sec,
        "eps_cor": eps_cor,
        "bits": length,
        "leak_ec_bits": leak,
        **details,
    }


def _decoy_counts(result: LinkResult, model: LinkModel) -> DecoyCounts:
    src = model.source
    rows = result.details["per_intensity"]
    if not isinstance(src, WeakCoherentSource) or len(rows) != 3:
        raise ConfigError(
            "decoy-bb84 post-processing needs exactly three intensities (signal, weak, vacuum)",
            field="decoys",
        )
    probs = src.selection_probabilities
    return DecoyCounts(
        intensities=(
            float(src.intensities[0]),
            float(src.intensities[1]),
            float(src.intensities[2]),
        ),
        probabilities=(float(probs[0]), float(probs[1]), float(probs[2])),
        n_z=tuple(int(r["detected_zz"]) for r in rows),  # type: ignore[arg-type]
        n_x=tuple(int(r["detected_xx"]) for r in rows),  # type: ignore[arg-type]
        m_x=tuple(int(r["errors_xx"]) for r in rows),  # type: ignore[arg-type]
    )


def postprocess(
    result: LinkResult,
    model: LinkModel,
    rng: np.random.Generator,
    config: PostprocessConfig | None = None,
) -> PostprocessResult:
    """Run estimation, reconciliation, verification and privacy amplification.

    Parameters
    ----------
    result
        A run of :func:`~qkdtwin.qkd.simulate_link` with ``keep_bits=True``.
    model
        The link it ran on (intensities, probabilities, repetition rate).
    rng
        Randomness of the classical protocol (samples, permutations, hash seeds).
    config
        Post-processing parameters.

    Returns
    -------
    PostprocessResult

    Raises
    ------
    ConfigError
        If the run kept no bits, or the protocol has no finite-key analysis here (sarg04).
    """
    cfg = config or PostprocessConfig()
    t0 = time.perf_counter()
    if result.sifted_key is None:
        raise ConfigError(
            "post-processing needs the sifted bits: simulate with keep_bits=True", field="keep_bits"
        )
    if result.protocol not in SUPPORTED:
        raise ConfigError(
            f"no finite-key analysis for {result.protocol}; post-processing supports "
            + ", ".join(SUPPORTED),
            field="protocol",
            value=result.protocol,
        )
    sk: SiftedKey = result.sifted_key
    details: PostprocessDetails = {}
    decoy = result.protocol == "decoy-bb84"
    # ------------------------------------------------------------ 1. parameter estimation
    if decoy:
        counts = _decoy_counts(result, model)
        key = sk.select(basis=0)  # Z-basis bits of every intensity form the key
        alice, bob = key.alice, key.bob
        n_x, m_x = sum(counts.n_x), sum(counts.m_x)
        q_est = m_x / n_x if n_x else 0.5
        q_up = q_est
        aborted = n_x == 0 or q_est > cfg.abort_threshold
        reason = f"X-basis QBER {q_est:.4f} above {cfg.abort_threshold:g}" if aborted else None
        k_sample = 0
    else:
        if sk.alice.size < 2:
            return _aborted(result, cfg, t0, "too few sifted bits")
        est = sample_qber(
            sk.alice,
            sk.bob,
            rng,
            sample_fraction=cfg.sample_fraction,
            eps=cfg.eps_sec,
            abort_threshold=cfg.abort_threshold,
        )
        alice, bob = sk.alice[est.keep], sk.bob[est.keep]
        q_est, q_up, k_sample = est.qber, est.qber_upper, est.sample_size
        aborted = est.aborted
        reason = f"QBER bound {q_up:.4f} above {cfg.abort_threshold:g}" if aborted else None
    n_in = int(alice.size)
    true_qber = float(np.mean(alice != bob)) if n_in else 0.0
    if aborted or n_in == 0:
        return _aborted(result, cfg, t0, reason or "no key bits", q_est, q_up, true_qber, n_in)
    # ------------------------------------------------------------ 2-3. reconcile and verify
    q_for_blocks = min(max(q_est, 1e-4), 0.25)
    channel = ClassicalChannel()
    kept_a: list[NDArray[np.uint8]] = []
    kept_b: list[NDArray[np.uint8]] = []
    frames = _frames(n_in, cfg.frame_bits)
    failed = 0
    leaked = 0
    tag_bits = 0
    errors_in_kept = 0
    for start, stop in frames:
        fa, fb = alice[start:stop], bob[start:stop]
        rec = reconcile(fa, fb, q_for_blocks, variant=cfg.reconciliation, rng=rng, channel=channel)
        leaked += rec.leaked_bits
        ver = verify_keys(fa, rec.corrected, rng, eps_cor=cfg.eps_cor / len(frames))
        tag_bits += ver.tag_bits
        if ver.verified:
            kept_a.append(fa)
            kept_b.append(rec.corrected)
            errors_in_kept += int(np.count_nonzero(fa != fb))
        else:
            failed += 1
    rec_a = np.concatenate(kept_a) if kept_a else np.zeros(0, np.uint8)
    rec_b = np.concatenate(kept_b) if kept_b else np.zeros(0, np.uint8)
    n_rec = int(rec_a.size)
    q_kept = errors_in_kept / n_rec if n_rec else 0.0
    f_eff = leaked / (n_in * h2(true_qber)) if true_qber > 0 else None
    # ------------------------------------------------------------ 4. key length and PA
    failed_bits = n_in - n_rec
    details["failed_frames"] = {
        "treatment": cfg.failed_frames,
        "frames": failed,
        "bits_counted_as_disclosed": failed_bits if cfg.failed_frames == "disclose" else 0,
    }
    if failed and cfg.failed_frames == "abort":
        return _aborted(
            result, cfg, t0, f"{failed} frame(s) failed verification (failed_frames: abort)",
            q_est, q_up, true_qber, n_in,
        )  # fmt: skip
    # the whole block's bound, the failed frames' bits counted as leaked (chain rule)
    leak_total = leaked + tag_bits + failed_bits
    length, details["finite_key"] = secure_length(
        result,
        model,
        leak_total,
        n_key=n_in,
        k_sample=k_sample,
        qber=q_est,
        eps_sec=cfg.eps_sec,
        eps_cor=cfg.eps_cor,
        counts=counts if decoy else None,
    )
    length = max(0, min(length, n_rec))
    if length > 0:
        seed = rng.integers(0, 2, toeplitz_seed_length(n_rec, length), dtype=np.uint8)
        hasher = ToeplitzHasher(n_rec, length, seed)
        final_a, final_b = hasher(rec_a), hasher(rec_b)
    else:
        final_a = final_b = np.zeros(0, dtype=np.uint8)
    seconds = result.pulses / model.repetition_rate_hz
    details["channel"] = {"messages": channel.messages, "rounds": channel.rounds}
    details["errors_corrected_fraction"] = q_kept
    return PostprocessResult(
        sifted_bits=int(sk.alice.size),
        key_bits_in=n_in,
        qber_estimate=q_est,
        qber_upper=q_up,
        true_qber=true_qber,
        leaked_bits=leaked,
        verification_bits=tag_bits,
        reconciliation_efficiency=f_eff,
        frames=len(frames),
        frames_failed=failed,
        verified=failed == 0,
        final_key_bits=int(final_a.size),
        keys_identical=bool(np.array_equal(final_a, final_b)),
        secret_key_rate_bps=final_a.size / seconds,
        aborted=False,
        abort_reason=None,
        reconciliation=cfg.reconciliation,
        elapsed_s=time.perf_counter() - t0,
        details=details,
        alice_key=final_a,
        bob_key=final_b,
    )


def _aborted(
    result: LinkResult,
    cfg: PostprocessConfig,
    t0: float,
    reason: str,
    q_est: float = 0.0,
    q_up: float = 0.0,
    true_qber: float = 0.0,
    n_in: int = 0,
) -> PostprocessResult:
    sk = result.sifted_key
    return PostprocessResult(
        sifted_bits=0 if sk is None else int(sk.alice.size),
        key_bits_in=n_in,
        qber_estimate=q_est,
        qber_upper=q_up,
        true_qber=true_qber,
        leaked_bits=0,
        verification_bits=0,
        reconciliation_efficiency=None,
        frames=0,
        frames_failed=0,
        verified=False,
        final_key_bits=0,
        keys_identical=True,
        secret_key_rate_bps=0.0,
        aborted=True,
        abort_reason=reason,
        reconciliation=cfg.reconciliation,
        elapsed_s=time.perf_counter() - t0,
    )


def write_keys(
    path: Path | str, key: NDArray[np.uint8], rng: np.random.Generator, key_size_bits: int = 256
) -> int:
    """Write the final key as ``KEY_ID HEX`` lines (one key of ``key_size_bits`` per line).

    Key IDs are random UUIDs (version 4) drawn from ``rng``, as the ETSI GS QKD 014 key
    container uses them. The file is written to a temporary name and renamed, so a reader never
    sees a half-written file. Returns the number of keys written (leftover bits are dropped).

    Raises
    ------
    ConfigError
        For a key size that is not a positive multiple of 8, or an unwritable path.
    """
    if key_size_bits < 8 or key_size_bits % 8:
        raise ConfigError(
            f"key size must be a positive multiple of 8 bits, got {key_size_bits}",
            field="key_size",
            value=key_size_bits,
        )
    count = key.size // key_size_bits
    packed = np.packbits(key[: count * key_size_bits]).reshape(count, key_size_bits // 8)
    lines = []
    for row in packed:
        kid = uuid.UUID(bytes=rng.bytes(16), version=4)
        lines.append(f"{kid} {row.tobytes().hex()}\n")
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text("".join(lines))
        tmp.replace(out)
    except OSError as exc:
        raise ConfigError(
            f"cannot write keys to {out}: {exc.strerror}", field="keys_out", value=str(out)
        ) from None
    return count
