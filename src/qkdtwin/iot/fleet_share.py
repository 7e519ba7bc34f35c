"""The devices of many gateways stepped as one fleet, each gateway's part handed to its session.

A twin of 1,000 gateways with 10 devices each stepped 1,000 fleets of 10 every second: ~100 us
each, nearly all of it NumPy's per-call overhead (a fleet's step is ~50 whole-array
operations), ~0.1 s of every tick. :class:`SharedFleet` lays the devices of every gateway out
as one :class:`~qkdtwin.iot.devices.DeviceFleet` (the same models, the same byte layout) and
steps it once per interval (~26 ms for 10,000 devices); each gateway's
:class:`TelemetrySession <qkdtwin.iot.session.TelemetrySession>` takes its part through a
:class:`FleetPart`, which it uses where it would use its own fleet.

A reading carries the wall time of its sampling (``ts_ns``, for the end-to-end latency). The
sessions run one after another after the shared step, so a part stamps its readings with the
wall clock when its session takes them: the latency stays the pipeline's (sealing, the bus,
opening, decoding), as with a fleet per session, not the time the twin took to reach that
gateway.

Device ``i`` of the shared fleet has kind ``KINDS[i % 4]``, so a gateway's mix of kinds
depends on where its devices fall (10 per gateway: 3, 3, 2, 2 of the four kinds, rotated),
and the random streams are the shared fleet's, not one per gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from qkdtwin.errors import ConfigError
from qkdtwin.iot.devices import DeviceFleet, stamp_wall_time

__all__ = ["FleetPart", "SharedFleet"]


class FleetPart:
    """One gateway's devices within a :class:`SharedFleet`; quacks like a ``DeviceFleet``.

    Attributes
    ----------
    device_ids, kinds
        The gateway's devices and their kinds, in the shared fleet's order.
    """

    def __init__(self, owner: SharedFleet, index: int, ids: list[str], kinds: list[str]) -> None:
        self._owner = owner
        self._index = index
        self.device_ids = ids
        self.kinds = kinds
        self._taken = 0  # the shared step whose readings this part took last

    @property
    def n(self) -> int:
        """Number of devices."""
        return len(self.device_ids)

    def step(self, dt_s: float, count: int = 1) -> list[tuple[str, bytes]]:
        """Return this part's readings of the shared fleet's last step, stamped now.

        Raises
        ------
        ConfigError
            If ``dt_s`` or ``count`` differ from the shared step's (``field="dt_s"``), or this
            part already took that step's readings, or the fleet was never stepped
            (``field="step"``): a session must not run more intervals than the fleet.
        """
        return self._owner._take(self, dt_s, count)


class SharedFleet:
    """One :class:`~qkdtwin.iot.devices.DeviceFleet` for the devices of many gateways.

    Parameters
    ----------
    groups
        The device IDs of each gateway (each list non-empty; all IDs unique).
    rng
        Random generator of the whole fleet.
    payload_bytes, fault_rate_per_s, drift_rate_per_s
        As :class:`~qkdtwin.iot.devices.DeviceFleet`'s (the same for every gateway).
    wall_ns
        Wall clock (ns) stamped into the readings when a part takes them.

    Raises
    ------
    ConfigError
        For no group, an empty group, repeated IDs or a bad ID (``field="device_ids"``), or a
        bad fleet option (as ``DeviceFleet`` raises it).
    """

    def __init__(
        self,
        groups: Sequence[Sequence[str]],
        rng: np.random.Generator,
        *,
        payload_bytes: int = 256,
        fault_rate_per_s: float = 1e-4,
        drift_rate_per_s: float = 2e-4,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if not groups or any(len(g) == 0 for g in groups):
            raise ConfigError("every gateway needs at least one device", field="device_ids")
        ids = [str(d) for g in groups for d in g]
        self.fleet = DeviceFleet(
            len(ids),
            rng,
            payload_bytes=payload_bytes,
            fault_rate_per_s=fault_rate_per_s,
            drift_rate_per_s=drift_rate_per_s,
            wall_ns=wall_ns,
            device_ids=ids,
        )
        self._wall_ns = wall_ns
        owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
        out_owner = owner[self.fleet._order]  # the gateway of each position of a step's output
        #: positions of each gateway's readings in one sample's output, in output order
        self._positions = [np.flatnonzero(out_owner == i).tolist() for i in range(len(groups))]
        kinds = self.fleet.kinds
        self.parts: list[FleetPart] = []
        start = 0
        for i, g in enumerate(groups):
            stop = start + len(g)
            self.parts.append(FleetPart(self, i, ids[start:stop], kinds[start:stop]))
            start = stop
        self._step = 0
        self._last: tuple[float, int] = (0.0, 0)
        self._batches: list[list[tuple[str, bytes]]] = [[] for _ in groups]

    @property
    def t(self) -> float:
        """Simulation time of the fleet's last sample, seconds."""
        return self.fleet.t

    def step(self, dt_s: float, count: int = 1) -> None:
        """Advance every device ``dt_s`` seconds, ``count`` samples each; hold each part's share.

        Readings a part did not take since the previous step are dropped (its session did not
        run that interval, as a gateway that is down samples nothing).
        """
        out = self.fleet.step(dt_s, count)
        n = self.fleet.n
        self._batches = [
            [out[s * n + p] for s in range(count) for p in pos] for pos in self._positions
        ]
        self._step += 1
        self._last = (float(dt_s), int(count))

    def _take(self, part: FleetPart, dt_s: float, count: int) -> list[tuple[str, bytes]]:
        if self._step == 0:
            raise ConfigError("the shared fleet was never stepped", field="step")
        if (float(dt_s), int(count)) != self._last:
            raise ConfigError(
                f"the shared fleet stepped {self._last}, this part was asked {(dt_s, count)}",
                field="dt_s",
            )
        if part._taken == self._step:
            raise ConfigError("this part already took the fleet's last step", field="step")
        part._taken = self._step
        batch, self._batches[part._index] = self._batches[part._index], []
        now = self._wall_ns()
        return [(dev, stamp_wall_time(rec, now)) for dev, rec in batch]
