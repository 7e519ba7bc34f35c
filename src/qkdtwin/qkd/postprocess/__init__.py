"""Classical post-processing: sifted bits to identical, provably-sized secret keys.

Recipes: :func:`postprocess` (the whole chain on a simulated link), :func:`reconcile`
(Cascade), :func:`verify_keys`, :func:`toeplitz_hash`, :func:`tomamichel_key_length`,
:func:`lim_decoy_key_length`, :func:`sample_qber`.
"""

from __future__ import annotations

from qkdtwin.qkd.postprocess.amplify import (
    ToeplitzHasher,
    fft_backend_name,
    toeplitz_hash,
    toeplitz_hash_naive,
)
from qkdtwin.qkd.postprocess.cascade import (
    CASCADE_VARIANTS,
    DEFAULT_VARIANT,
    ReconciliationResult,
    reconcile,
)
from qkdtwin.qkd.postprocess.channel import ClassicalChannel
from qkdtwin.qkd.postprocess.estimate import QberEstimate, sample_qber, serfling_deviation
from qkdtwin.qkd.postprocess.finite_key import (
    DecoyCounts,
    lim_decoy_key_length,
    tomamichel_key_length,
)
from qkdtwin.qkd.postprocess.pipeline import (
    PostprocessConfig,
    PostprocessResult,
    finite_key_estimate,
    postprocess,
    write_keys,
)
from qkdtwin.qkd.postprocess.verify import VerificationResult, polynomial_hash, verify_keys

__all__ = [
    "CASCADE_VARIANTS",
    "DEFAULT_VARIANT",
    "ClassicalChannel",
    "DecoyCounts",
    "PostprocessConfig",
    "PostprocessResult",
    "QberEstimate",
    "ReconciliationResult",
    "ToeplitzHasher",
    "VerificationResult",
    "fft_backend_name",
    "finite_key_estimate",
    "lim_decoy_key_length",
    "polynomial_hash",
    "postprocess",
    "reconcile",
    "sample_qber",
    "serfling_deviation",
    "toeplitz_hash",
    "toeplitz_hash_naive",
    "tomamichel_key_length",
    "verify_keys",
    "write_keys",
]
