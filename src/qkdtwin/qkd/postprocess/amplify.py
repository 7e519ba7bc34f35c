"""Privacy amplification by Toeplitz hashing, computed with the FFT in O(n log n).

A Toeplitz matrix ``T`` of size ``m x n`` over GF(2) is fixed by ``n + m - 1`` public random
bits ``s``: ``T[i, j] = s[i - j + n - 1]``. The family of all such matrices is two-universal
(Krawczyk, CRYPTO 1994; Carter and Wegman), so by the leftover hash lemma the output
``y = T x`` of an ``n``-bit key about which Eve holds smooth min-entropy ``H`` is
``eps``-close to uniform when ``m <= H - 2 log2(1 / (2 eps))``.

``T x`` is a convolution: ``y[i] = sum_j s[i - j + n - 1] x[j]  (mod 2)``. The integer
convolution is computed exactly with a real FFT of length ``L >= n + m - 1`` (circular
wrap-around lands outside the window we read) and reduced mod 2; with float64 the rounding
error stays far below 1/2 for the key sizes used here (checked at run time).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import fft

from qkdtwin.errors import ConfigError

__all__ = [
    "ToeplitzHasher",
    "fft_backend_name",
    "toeplitz_hash",
    "toeplitz_hash_naive",
    "toeplitz_seed_length",
]


def toeplitz_seed_length(n: int, m: int) -> int:
    """Return the number of public random bits defining an ``m x n`` Toeplitz matrix."""
    return n + m - 1


def _check_bits(name: str, x: NDArray[np.uint8]) -> NDArray[np.uint8]:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D bit array", field=name)
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ConfigError(f"{name} must contain only 0 and 1", field=name)
    return arr.astype(np.uint8, copy=False)


class _ScipyBackend:
    """Real FFTs from SciPy's pocketfft (always available)."""

    name = "scipy"

    def __init__(self, length: int) -> None:
        self.length = length

    def rfft(self, x: NDArray[np.float64]) -> NDArray[np.complex128]:
        return np.asarray(fft.rfft(x, self.length))

    def irfft(self, y: NDArray[np.complex128]) -> NDArray[np.float64]:
        return np.asarray(fft.irfft(y, self.length))


class _FftwBackend:
    """FFTW through pyFFTW (optional extra ``qkdtwin[fftw]``; FFTW itself is GPL).

    About two to three times faster than pocketfft at the 10^6-point sizes of privacy
    amplification, and it works in place on aligned buffers.
    """

    name = "fftw"

    def __init__(self, length: int, planner: str = "estimate") -> None:
        import pyfftw

        self.length = length
        self._in = pyfftw.empty_aligned(length, dtype="float64")
        self._spec = pyfftw.empty_aligned(length // 2 + 1, dtype="complex128")
        self._out = pyfftw.empty_aligned(length, dtype="float64")
        if planner == "measure":
            _load_wisdom()
        flags = ("FFTW_MEASURE" if planner == "measure" else "FFTW_ESTIMATE", "FFTW_DESTROY_INPUT")
        self._fwd = pyfftw.FFTW(self._in, self._spec, flags=flags, threads=1)
        self._bwd = pyfftw.FFTW(
            self._spec, self._out, direction="FFTW_BACKWARD", flags=flags, threads=1
        )
        if planner == "measure":
            _save_wisdom()

    def rfft(self, x: NDArray[np.float64]) -> NDArray[np.complex128]:
        return self.convolve(x, None).copy()

    def convolve(
        self, x: NDArray[np.generic], spectrum: NDArray[np.complex128] | None
    ) -> NDArray[np.complex128]:
        """Forward transform of ``x``; if ``spectrum`` is given, multiply by it in place."""
        self._in[: x.size] = x
        self._in[x.size :] = 0.0
        self._fwd()
        if spectrum is not None:
            np.multiply(self._spec, spectrum, out=self._spec)
        return np.asarray(self._spec)

    def irfft(self, y: NDArray[np.complex128]) -> NDArray[np.float64]:
        if y is not self._spec:
            self._spec[:] = y
        self._bwd()
        return np.asarray(self._out)


def _wisdom_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qkdtwin" / "fftw-wisdom.pickle"


def _load_wisdom() -> None:
    """Import FFTW plans measured earlier on this machine (a miss only costs planning time)."""
    import pyfftw

    try:
        with _wisdom_path().open("rb") as fh:
            pyfftw.import_wisdom(pickle.load(fh))
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return


def _save_wisdom() -> None:
    import pyfftw

    path = _wisdom_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(pyfftw.export_wisdom(), fh)
        tmp.replace(path)
    except OSError:  # a read-only home only loses the cache
        return


def fft_backend_name(prefer: str = "auto") -> str:
    """Return the FFT backend that :class:`ToeplitzHasher` will use: ``fftw`` or ``scipy``."""
    if prefer == "scipy":
        return "scipy"
    try:
        import pyfftw  # noqa: F401
    except ImportError:
        if prefer == "fftw":
            raise ConfigError(
                "the fftw backend needs pyFFTW: pip install 'qkdtwin[fftw]'", field="backend"
            ) from None
        return "scipy"
    return "fftw"


class ToeplitzHasher:
    """Toeplitz hash of ``n``-bit blocks to ``m`` bits with one fixed public seed.

    The seed's spectrum is computed once, so each further block costs one forward and one
    inverse real FFT. Reusing one seed for several blocks is sound: the leftover hash lemma
    only needs the seed to be uniform and independent of the keys, and public.

    Parameters
    ----------
    n, m
        Input and output lengths in bits (``0 <= m <= n``).
    seed
        ``n + m - 1`` public random bits.
    backend
        ``"auto"`` (FFTW when pyFFTW is installed, else SciPy), ``"fftw"`` or ``"scipy"``.
    planner
        FFTW only: ``"estimate"`` (instant plans) or ``"measure"`` (FFTW times candidate
        plans once per size — a minute at 10^6 bits — and keeps them in
        ``~/.cache/qkdtwin/fftw-wisdom.pickle``; about 1.5x faster hashing afterwards).
    """

    def __init__(
        self,
        n: int,
        m: int,
        seed: NDArray[np.uint8],
        backend: str = "auto",
        planner: str = "estimate",
    ) -> None:
        if n > 1 << 27:
            raise ConfigError(
                f"blocks above 2^27 bits are not supported (got {n})", field="key", value=n
            )
        if n < 1 or m < 0 or m > n:
            raise ConfigError(
                f"output_bits must be in [0, {n}], got {m}",
                field="output_bits",
                value=m,
                allowed=f"[0, {n}]",
            )
        s = _check_bits("seed", seed)
        if s.size != toeplitz_seed_length(n, m):
            raise ConfigError(
                f"seed must have n + m - 1 = {toeplitz_seed_length(n, m)} bits, got {s.size}",
                field="seed",
            )
        self.n, self.m = n, m
        self.backend = fft_backend_name(backend)
        length = fft.next_fast_len(n + m - 1, real=True)
        self._fft: _ScipyBackend | _FftwBackend = (
            _FftwBackend(length, planner) if self.backend == "fftw" else _ScipyBackend(length)
        )
        self._seed_spectrum = self._fft.rfft(s.astype(np.float64)) if m else None

    def __call__(self, key: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Hash one ``n``-bit block."""
        x = _check_bits("key", key)
        if x.size != self.n:
            raise ConfigError(
                f"key must have {self.n} bits, got {x.size}", field="key", value=x.size
            )
        if self.m == 0 or self._seed_spectrum is None:
            return np.zeros(0, dtype=np.uint8)
        # y[i] = sum_j s[i + (n - 1) - j] x[j] = (s * x)[i + n - 1]: indices n-1 .. n+m-2 of
        # the linear convolution, which a circular one of length >= n + m - 1 reproduces.
        if isinstance(self._fft, _FftwBackend):
            spec = self._fft.convolve(x, self._seed_spectrum)
        else:
            spec = self._fft.rfft(x.astype(np.float64))
            spec *= self._seed_spectrum
        conv = self._fft.irfft(spec)[self.n - 1 : self.n - 1 + self.m]
        # entries are integers in [0, n]; the float64 round-off of the FFT is ~1e-9 at the
        # sizes allowed (checked on a stride of the output rather than every entry)
        probe = conv[:: max(1, self.m // 4096)]
        if float(np.max(np.abs(probe - np.rint(probe)))) > 0.25:  # pragma: no cover
            raise ConfigError("key too long for an exact float64 FFT convolution", field="key")
        return ((conv + 0.5).astype(np.int64) & 1).astype(np.uint8)


def toeplitz_hash(
    key: NDArray[np.uint8], seed: NDArray[np.uint8], output_bits: int, backend: str = "auto"
) -> NDArray[np.uint8]:
    """Compress ``key`` (n bits) to ``output_bits`` bits with the Toeplitz matrix of ``seed``.

    Parameters
    ----------
    key
        The reconciled key, ``n`` bits (0/1 values).
    seed
        ``n + output_bits - 1`` public random bits defining the matrix.
    output_bits
        Output length ``m`` (0 <= m <= n).
    backend
        FFT backend, see :class:`ToeplitzHasher`.

    Returns
    -------
    numpy.ndarray
        ``m`` bits, equal to ``T @ key mod 2``.

    Raises
    ------
    ConfigError
        For a wrong seed length, an output longer than the input, or non-binary values.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 2, 64, dtype=np.uint8)
    >>> s = rng.integers(0, 2, 64 + 20 - 1, dtype=np.uint8)
    >>> bool(np.array_equal(toeplitz_hash(x, s, 20), toeplitz_hash_naive(x, s, 20)))
    True
    """
    x = _check_bits("key", key)
    if x.size == 0:
        raise ConfigError("key is empty", field="key")
    return ToeplitzHasher(x.size, int(output_bits), seed, backend)(x)


def toeplitz_hash_naive(
    key: NDArray[np.uint8], seed: NDArray[np.uint8], output_bits: int
) -> NDArray[np.uint8]:
    """Compute ``T @ key mod 2`` with the explicit matrix (reference; O(n m) memory)."""
    x = _check_bits("key", key).astype(np.int64)
    s = _check_bits("seed", seed).astype(np.int64)
    n, m = x.size, int(output_bits)
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    t = s[i - j + n - 1]
    out: NDArray[np.uint8] = ((t @ x) & 1).astype(np.uint8)
    return out
