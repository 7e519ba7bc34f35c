"""Detector dead time and afterpulsing applied to a time-ordered stream of click events.

The fast engine draws clicks pulse by pulse as if every gate were live. Dead time and
afterpulsing couple successive gates, so they are applied afterwards, in gate order, by a
small state machine over the (few) click events: a compiled loop (numba, cached on disk) when
there is dead time only, the Python loop below when afterpulses are drawn too (their draws
interleave with the state machine; the compiled loop gives identical results without them).
The state (the last registered click of each detector and pending afterpulses) is carried from
one chunk to the next, so a stream of chunks behaves as one long run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["DetectorTimeline"]


@dataclass
class DetectorTimeline:
    """Dead-time and afterpulse filter for a pair of detectors.

    Parameters
    ----------
    dead_gates
        Gates ignored after a registered click (0 disables dead time).
    afterpulse_prob
        Probability that a registered click triggers a click in the first live gate after the
        dead time.
    """

    dead_gates: int
    afterpulse_prob: float
    _last: list[int] = field(default_factory=lambda: [-(10**18), -(10**18)])
    _pending: list[tuple[int, int]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Whether the filter changes anything at all."""
        return self.dead_gates > 0 or self.afterpulse_prob > 0.0

    def apply(
        self,
        rng: np.random.Generator,
        offset: int,
        n_gates: int,
        gate: NDArray[np.int64],
        fired0: NDArray[np.bool_],
        fired1: NDArray[np.bool_],
    ) -> tuple[NDArray[np.int64], NDArray[np.bool_], NDArray[np.bool_]]:
        """Filter one chunk of click events.

        Parameters
        ----------
        rng
            Random generator for afterpulse draws.
        offset
            Global index of the chunk's first gate.
        n_gates
            Number of gates in the chunk.
        gate
            Chunk-local gate index of each raw click event, increasing.
        fired0, fired1
            Whether detector 0 / 1 fired at that gate.

        Returns
        -------
        tuple
            Registered events ``(gate, fired0, fired1)``, chunk-local, increasing, with at least
            one detector fired; afterpulses appear as events of their own or merge into others.
        """
        if self.afterpulse_prob == 0.0 and not self._pending:
            last = np.array(self._last, dtype=np.int64)
            keep, reg0, reg1 = _dead_time(
                np.ascontiguousarray(gate, dtype=np.int64) + offset,
                np.ascontiguousarray(fired0, dtype=np.bool_),
                np.ascontiguousarray(fired1, dtype=np.bool_),
                last,
                self.dead_gates,
            )
            self._last = [int(last[0]), int(last[1])]
            return gate[keep].astype(np.int64), reg0[keep], reg1[keep]
        events: dict[int, list[bool]] = {}
        for g, f0, f1 in zip(gate.tolist(), fired0.tolist(), fired1.tolist(), strict=True):
            events[offset + g] = [f0, f1]
        carry: list[tuple[int, int]] = []
        for g_abs, det in self._pending:
            if g_abs < offset + n_gates:
                events.setdefault(g_abs, [False, False])[det] = True
            else:
                carry.append((g_abs, det))
        self._pending = carry
        out_g: list[int] = []
        out0: list[bool] = []
        out1: list[bool] = []
        queue = sorted(events)
        i = 0
        while i < len(queue):
            g_abs = queue[i]
            i += 1
            fired = events[g_abs]
            reg = [False, False]
            for d in (0, 1):
                if fired[d] and g_abs - self._last[d] > self.dead_gates:
                    reg[d] = True
                    self._last[d] = g_abs
                    if self.afterpulse_prob > 0.0 and rng.random() < self.afterpulse_prob:
                        ap = g_abs + self.dead_gates + 1
                        if ap < offset + n_gates:
                            if ap not in events:
                                events[ap] = [False, False]
                                # keep the queue sorted: insert after position i-1
                                j = i
                                while j < len(queue) and queue[j] < ap:
                                    j += 1
                                queue.insert(j, ap)
                            events[ap][d] = True
                        else:
                            self._pending.append((ap, d))
            if reg[0] or reg[1]:
                out_g.append(g_abs - offset)
                out0.append(reg[0])
                out1.append(reg[1])
        return (
            np.asarray(out_g, dtype=np.int64),
            np.asarray(out0, dtype=np.bool_),
            np.asarray(out1, dtype=np.bool_),
        )


@njit(cache=True)
def _dead_time(
    gate_abs: NDArray[np.int64],
    fired0: NDArray[np.bool_],
    fired1: NDArray[np.bool_],
    last: NDArray[np.int64],
    dead_gates: int,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:  # pragma: no cover
    """Non-paralysable dead time over increasing click events (no afterpulses).

    ``last`` holds each detector's last registered gate and is updated in place. Returns which
    events register anything and, per event, which detector registers.
    """
    n = gate_abs.size
    keep = np.zeros(n, dtype=np.bool_)
    reg0 = np.zeros(n, dtype=np.bool_)
    reg1 = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        g = gate_abs[i]
        if fired0[i] and g - last[0] > dead_gates:
            reg0[i] = True
            last[0] = g
        if fired1[i] and g - last[1] > dead_gates:
            reg1[i] = True
            last[1] = g
        keep[i] = reg0[i] or reg1[i]
    return keep, reg0, reg1
