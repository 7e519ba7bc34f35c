"""Photon sources: weak coherent pulses with decoy intensities, single photons, SPDC pairs.

A source is described by the photon-number statistics of each *intensity class* it can emit.
The simulation and the analytic formulas only need two things from it:

* the probability generating function (PGF) ``G_k(z) = E[z^n]`` of the photon number ``n`` in
  intensity class ``k``: with per-photon survival probability ``t`` the probability that no
  photon survives is ``G_k(1 - t)``, which gives detector click probabilities exactly;
* the photon-number pmf ``P_k(n)`` and a sampler, for attacks that act on the photon number
  (photon-number splitting) and for the single-photon yields of decoy-state analysis.

Phase randomisation is assumed, so a coherent pulse of mean photon number ``mu`` is a Poisson
mixture of Fock states (Lo, Ma, Chen, PRL 94, 230504 (2005)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError

__all__ = ["EntangledPairSource", "SinglePhotonSource", "WeakCoherentSource"]


@dataclass(frozen=True)
class WeakCoherentSource:
    """Phase-randomised attenuated laser with a signal intensity and optional decoys.

    Parameters
    ----------
    mu
        Mean photon number of the signal pulses (> 0).
    decoys
        Mean photon numbers of the decoy intensities, e.g. ``(0.1, 0.0)`` for the weak + vacuum
        decoys of Ma et al., PRA 72, 012326 (2005). Each must be >= 0 and < ``mu``.
    probabilities
        Probability of emitting each intensity, in the order ``(mu, *decoys)``. Defaults to
        equal probabilities. Must sum to 1.

    Examples
    --------
    >>> src = WeakCoherentSource(mu=0.5, decoys=(0.1, 0.0))
    >>> src.intensities.tolist()
    [0.5, 0.1, 0.0]
    >>> round(float(src.photon_number_pmf(1)[0]), 4)  # P(n=1 | mu=0.5) = 0.5 e^-0.5
    0.3033
    """

    mu: float
    decoys: tuple[float, ...] = ()
    probabilities: tuple[float, ...] | None = None
    _p: NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v.in_range("mu", self.mu, 0.0, None, low_open=True)
        object.__setattr__(self, "decoys", tuple(float(d) for d in self.decoys))
        for d in self.decoys:
            v.in_range("decoy intensity", d, 0.0, self.mu, high_open=True)
        k = 1 + len(self.decoys)
        if self.probabilities is None:
            p = np.full(k, 1.0 / k)
        else:
            p = np.asarray(self.probabilities, dtype=np.float64)
            if p.shape != (k,):
                raise ConfigError(
                    f"probabilities needs {k} values (signal + {k - 1} decoys), got {p.size}",
                    field="probabilities",
                    value=self.probabilities,
                )
            if np.any(p < 0) or not np.isclose(p.sum(), 1.0, atol=1e-9):
                raise ConfigError(
                    "probabilities must be >= 0 and sum to 1",
                    field="probabilities",
                    value=self.probabilities,
                    allowed="simplex",
                )
        object.__setattr__(self, "_p", p)

    @property
    def intensities(self) -> NDArray[np.float64]:
        """Mean photon number of every intensity class, signal first."""
        return np.array((self.mu, *self.decoys), dtype=np.float64)

    @property
    def selection_probabilities(self) -> NDArray[np.float64]:
        """Probability of each intensity class."""
        return self._p.copy()

    def pgf(self, z: NDArray[np.float64] | float) -> NDArray[np.float64]:
        """PGF ``exp(mu_k (z - 1))`` for every class; shape ``(n_classes, *shape(z))``."""
        z = np.asarray(z, dtype=np.float64)
        mu = self.intensities.reshape((-1,) + (1,) * z.ndim)
        return np.asarray(np.exp(mu * (z - 1.0)))

    def photon_number_pmf(self, n: int | NDArray[np.int64]) -> NDArray[np.float64]:
        """Poisson probability of ``n`` photons for every class; shape ``(n_classes, ...)``."""
        from scipy import stats  # here: scipy.stats costs ~0.1 s to import, rates never need it

        n = np.asarray(n)
        mu = self.intensities.reshape((-1,) + (1,) * n.ndim)
        return np.asarray(stats.poisson.pmf(n, mu))

    def sample_photon_numbers(
        self, rng: np.random.Generator, intensity_idx: NDArray[np.integer]
    ) -> NDArray[np.int64]:
        """Draw a Poisson photon number for each pulse of the given intensity classes."""
        n: NDArray[np.int64] = rng.poisson(self.intensities[intensity_idx])
        return n


@dataclass(frozen=True)
class SinglePhotonSource:
    """Ideal (heralded or deterministic) single-photon source.

    Parameters
    ----------
    efficiency
        Probability that a trigger emits its photon, in (0, 1]; otherwise the pulse is empty.
        Multi-photon emission is zero (``g2(0) = 0``).
    """

    efficiency: float = 1.0

    def __post_init__(self) -> None:
        v.in_range("efficiency", self.efficiency, 0.0, 1.0, low_open=True)

    @property
    def intensities(self) -> NDArray[np.float64]:
        """Mean photon number of the single class (the emission efficiency)."""
        return np.array([self.efficiency])

    @property
    def selection_probabilities(self) -> NDArray[np.float64]:
        """One class, always selected."""
        return np.array([1.0])

    @property
    def decoys(self) -> tuple[float, ...]:
        """A single-photon source has no decoy intensities."""
        return ()

    @property
    def mu(self) -> float:
        """Mean photon number per trigger."""
        return self.efficiency

    def pgf(self, z: NDArray[np.float64] | float) -> NDArray[np.float64]:
        """PGF ``1 - p + p z``; shape ``(1, *shape(z))``."""
        z = np.asarray(z, dtype=np.float64)
        return np.asarray((1.0 - self.efficiency + self.efficiency * z)[np.newaxis, ...])

    def photon_number_pmf(self, n: int | NDArray[np.int64]) -> NDArray[np.float64]:
        """Bernoulli pmf of the photon number; shape ``(1, ...)``."""
        n = np.asarray(n)
        p = np.where(n == 1, self.efficiency, np.where(n == 0, 1.0 - self.efficiency, 0.0))
        return np.asarray(p[np.newaxis, ...], dtype=np.float64)

    def sample_photon_numbers(
        self, rng: np.random.Generator, intensity_idx: NDArray[np.integer]
    ) -> NDArray[np.int64]:
        """Draw 0 or 1 photon per pulse."""
        size = np.shape(intensity_idx)
        return (rng.random(size) < self.efficiency).astype(np.int64)


@dataclass(frozen=True)
class EntangledPairSource:
    """Spontaneous parametric down-conversion source of polarisation-entangled pairs.

    Follows the model of Ma, Fung, Lo, PRA 76, 012307 (2007): a pulse holds ``n`` pairs with
    probability ``P(n) = (n + 1) lam^n / (1 + lam)^(n + 2)``, where ``mu = 2 lam`` is the mean
    number of photon pairs per pulse. In one measurement basis the ``n`` pairs split into
    ``n - m`` pairs of polarisation 0 and ``m`` pairs of polarisation 1 with ``m`` uniform on
    ``0..n``; Alice's and Bob's photons of a pair have the same polarisation.

    Parameters
    ----------
    mu
        Mean photon-pair number per pulse (> 0), the ``mu`` of Ma-Fung-Lo.
    """

    mu: float

    def __post_init__(self) -> None:
        v.in_range("mu", self.mu, 0.0, None, low_open=True)

    @property
    def lam(self) -> float:
        """Half the mean pair number, ``lambda`` in Ma-Fung-Lo."""
        return self.mu / 2.0

    def pair_number_pmf(self, n: int | NDArray[np.int64]) -> NDArray[np.float64]:
        """Probability of ``n`` pairs in a pulse."""
        n = np.asarray(n, dtype=np.float64)
        lam = self.lam
        return np.asarray((n + 1.0) * lam**n / (1.0 + lam) ** (n + 2.0))

    def sample_pair_numbers(self, rng: np.random.Generator, size: int) -> NDArray[np.int64]:
        """Draw the number of pairs for ``size`` pulses.

        ``P(n)`` above is a negative binomial law with 2 successes and success probability
        ``1 / (1 + lam)``: the pair number is the sum of two independent geometric variables,
        one per polarisation mode.
        """
        return rng.negative_binomial(2, 1.0 / (1.0 + self.lam), size=size)
