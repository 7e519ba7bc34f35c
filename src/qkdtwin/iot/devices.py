"""Simulated IIoT equipment: temperature, vibration, power and energy meters of a plant.

The seed paper's IoT layer monitors "temperature, vibration, power and energy consumption of
machines and production lines". :class:`DeviceFleet` simulates ``n`` such devices, vectorised
with NumPy, each kind in turn (device ``i`` has kind ``KINDS[i % 4]``). Every machine follows a
production load cycle ``load(t) = 0.6 + 0.3 sin(2 pi t / 600 s + phase) + noise``; the signals:

* temperature (deg C): ``22 + 35 load`` + sensor noise (0.15 K); fault (cooling failure)
  +25 K; drift: a sensor offset growing 0.01..0.05 K/s.
* vibration: velocity waveform at 2560 Hz, shaft line at 24.6 Hz and its harmonic, amplitude
  ``(1 + 3 load)`` mm/s; a bearing fault adds impulses at the outer-race frequency (87 Hz),
  raising RMS, crest factor and kurtosis (ISO 10816 severity in mm/s RMS); drift: gain error.
* power (kW, kvar, V): ``P = rated load``, power factor ``0.80 + 0.15 load``, 400 V; fault:
  voltage sag to 340 V and power factor 0.6; drift: current-transformer gain error.
* energy (kWh): integrated line power of a production line (monotonic meter); fault: the
  meter loses its current input, reads 0 kW and its counter stalls.

Health follows a seeded Markov chain per device: ``ok -> drift`` at ``drift_rate_per_s``,
``ok|drift -> fault`` at ``fault_rate_per_s``, ``fault -> ok`` after an exponential repair
time of mean ``repair_s``. The health label is the simulator's ground truth, carried in the
reading so the twin can score its alarms.

A reading is encoded as (big-endian, samples little-endian float32)::

    kind u8 | health u8 | n_values u8 | id length u8 | n_samples u16 | t f64 (s) |
    ts_ns u64 (wall clock at sampling) | device ID | values f64 x n | samples f32 x n_samples |
    zero padding to payload_bytes

The samples (a raw signal window) fill the payload up to ``payload_bytes``, so payload size is
a real knob rather than padding alone.
"""

from __future__ import annotations

import itertools
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdtwin.errors import ConfigError, MalformedEnvelopeError
from qkdtwin.iot.envelope import check_sender_id

__all__ = [
    "HEALTH",
    "KINDS",
    "MIN_PAYLOAD_BYTES",
    "VALUE_NAMES",
    "VALUE_UNITS",
    "DeviceFleet",
    "Reading",
    "check_reading",
    "decode_aggregate",
    "decode_reading",
    "encode_aggregate",
    "reading_health",
    "stamp_wall_time",
]

KINDS = ("temperature", "vibration", "power", "energy")
HEALTH = ("ok", "fault", "drift")
VALUE_NAMES: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature_c", "ambient_c"),
    "vibration": ("rms_mm_s", "peak_mm_s", "crest_factor", "kurtosis"),
    "power": ("active_kw", "reactive_kvar", "power_factor", "voltage_v"),
    "energy": ("energy_kwh", "line_power_kw"),
}
#: Engineering unit of each value (Sparkplug ``engUnit``; ``""``: dimensionless).
VALUE_UNITS: dict[str, str] = {
    "temperature_c": "°C",
    "ambient_c": "°C",
    "rms_mm_s": "mm/s",
    "peak_mm_s": "mm/s",
    "crest_factor": "",
    "kurtosis": "",
    "active_kw": "kW",
    "reactive_kvar": "kvar",
    "power_factor": "",
    "voltage_v": "V",
    "energy_kwh": "kWh",
    "line_power_kw": "kW",
}
_REC = struct.Struct("!BBBBHdQ")
_U32 = struct.Struct("!I")
#: Smallest ``payload_bytes`` that holds every kind of reading of a 16-character device ID.
MIN_PAYLOAD_BYTES = _REC.size + 16 + 8 * 4
_FS_HZ = 2560.0
_SHAFT_HZ = 24.6
_BPFO_HZ = 87.0
# Angular factors written as the model writes them (``2 * np.pi * f``, left to right), so the
# products with time are bit for bit those of the model.
_TWO_PI = 2 * np.pi
_SHAFT_W = 2 * np.pi * _SHAFT_HZ
_HARM_W = 2 * np.pi * 2 * _SHAFT_HZ
_MAINS_W = 2 * np.pi * 50.0
_SQRT2 = np.sqrt(2.0)
#: The per-sample tail of the header (``t``, ``ts_ns``) and where it starts in a reading.
_TTS = struct.Struct("!dQ")
_TTS_AT = _REC.size - _TTS.size
#: Most Gaussian draws per sample taken with one generator call into one preallocated buffer
#: (beyond, one call per signal: the buffer and its scale vector would cost memory).
_ONE_DRAW_MAX = 1 << 20


@dataclass(slots=True)
class Reading:
    """One decrypted reading as the aggregator hands it to the twin.

    Attributes
    ----------
    device_id
        The device that sampled it.
    kind
        ``"temperature"``, ``"vibration"``, ``"power"`` or ``"energy"``.
    t
        Simulation time of the sample, seconds.
    values
        Named measurements (names in :data:`VALUE_NAMES`; units in the names).
    health
        Ground truth of the simulator: ``"ok"``, ``"fault"`` or ``"drift"``.
    ts_ns
        Wall-clock time of sampling (ns since the epoch), for end-to-end latency.
    raw
        The encoded plaintext exactly as the device produced it.
    """

    device_id: str
    kind: str
    t: float
    values: dict[str, float]
    health: str
    ts_ns: int = 0
    raw: bytes = field(default=b"", repr=False)


def _check_layout(data: bytes) -> tuple[str, str, tuple[str, ...], str, int, float, int]:
    """Check an encoded reading's layout and return its header fields.

    Returns ``(kind, health, names, device_id, values_at, t, ts_ns)``, ``values_at`` being the
    byte offset of its values.

    Raises
    ------
    MalformedEnvelopeError
        With reason ``"bad_payload"`` if the bytes are not a reading.
    """
    try:
        kind_c, health_c, nval, idlen, nsamp, t, ts_ns = _REC.unpack_from(data, 0)
        if kind_c < 1:
            raise ValueError("kind")
        kind = KINDS[kind_c - 1]
        health = HEALTH[health_c]
        names = VALUE_NAMES[kind]
        if nval != len(names):
            raise ValueError("value count")
        off = _REC.size
        device_id = data[off : off + idlen].decode("ascii")
        off += idlen
        if len(data) < off + 8 * nval + 4 * nsamp:
            raise ValueError("short")
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise MalformedEnvelopeError("malformed reading", reason="bad_payload") from exc
    return kind, health, names, device_id, off, t, ts_ns


def decode_reading(data: bytes) -> Reading:
    """Decode one encoded reading.

    Raises
    ------
    MalformedEnvelopeError
        With reason ``"bad_payload"`` if the bytes are not a reading.
    """
    kind, health, names, device_id, off, t, ts_ns = _check_layout(data)
    vals = struct.unpack_from(f"!{len(names)}d", data, off)
    return Reading(device_id, kind, t, dict(zip(names, vals, strict=True)), health, ts_ns, data)


def check_reading(data: bytes) -> tuple[str, int]:
    """Check one encoded reading as :func:`decode_reading` does, without decoding its values.

    Returns ``(device_id, ts_ns)``: what a receiver needs before it keeps the reading as it
    came (see :class:`~qkdtwin.iot.latest.LatestReadings`) and measures its latency.

    Raises
    ------
    MalformedEnvelopeError
        With reason ``"bad_payload"`` for exactly the bytes :func:`decode_reading` refuses.
    """
    _, _, _, device_id, _, _, ts_ns = _check_layout(data)
    return device_id, ts_ns


def reading_health(data: bytes) -> str:
    """Return the health label (``"ok"``, ``"fault"`` or ``"drift"``) of a checked reading."""
    return HEALTH[data[1]]


def stamp_wall_time(record: bytes, ts_ns: int) -> bytes:
    """Return an encoded reading with its sampling wall time (``ts_ns``, ns) replaced."""
    at = _TTS_AT + 8  # the u64 ts_ns follows the f64 t
    return b"".join((record[:at], ts_ns.to_bytes(8, "big"), record[at + 8 :]))


def encode_aggregate(records: list[bytes]) -> bytes:
    """Concatenate encoded readings into the fixed scheme's aggregate.

    Layout: ``count u32`` then ``length u32 || reading`` for each reading.
    """
    parts = [_U32.pack(len(records))]
    for r in records:
        parts.append(_U32.pack(len(r)))
        parts.append(r)
    return b"".join(parts)


def decode_aggregate(data: bytes) -> list[bytes]:
    """Split an aggregate into its encoded readings.

    Raises
    ------
    MalformedEnvelopeError
        With reason ``"bad_payload"`` if the lengths do not add up.
    """
    try:
        (count,) = _U32.unpack_from(data, 0)
        off = 4
        out = []
        for _ in range(count):
            (n,) = _U32.unpack_from(data, off)
            off += 4
            if off + n > len(data):
                raise ValueError("short")
            out.append(data[off : off + n])
            off += n
        if off != len(data):
            raise ValueError("trailing bytes")
    except (struct.error, ValueError) as exc:
        raise MalformedEnvelopeError("malformed aggregate", reason="bad_payload") from exc
    return out


@dataclass(slots=True)
class _Segment:
    """Rows of one kind whose readings share one byte layout (same ID length), in output order.

    ``vals`` and ``wave`` are views into the fleet's encode buffer: the big-endian values and
    the little-endian float32 samples of rows ``a:b`` of the kind (``ns`` samples each).
    """

    a: int
    b: int
    ns: int
    vals: NDArray[Any]
    wave: NDArray[Any]
    whole: bool


class DeviceFleet:
    """``n`` simulated devices of the four kinds, stepped together (see the module docstring).

    Parameters
    ----------
    n
        Number of devices (>= 1).
    rng
        Random generator (signals, health transitions).
    payload_bytes
        Target size of each encoded reading, bytes (>= :data:`MIN_PAYLOAD_BYTES`).
    id_prefix
        Device IDs are ``f"{id_prefix}{i:05d}"``.
    device_ids
        The ``n`` device IDs instead (unique; :class:`~qkdtwin.iot.fleet_share.SharedFleet`
        names the devices of many gateways so). Device ``i`` still has kind ``KINDS[i % 4]``.
    fault_rate_per_s, drift_rate_per_s
        Transition rates of the health chain, 1/s.
    repair_s
        Mean time to repair a fault, s.
    wall_ns
        Wall clock (ns) stamped into readings (injectable).

    Notes
    -----
    A twin steps ~1,000 small fleets every second, so :meth:`step` is built for per-call
    overhead: everything that does not change between steps (record layouts and headers, the
    sample counts, the time bases of the waveforms, the noise scales) is laid out once here;
    a step draws all its Gaussian noise with one generator call (the same draws, in the same
    order, as one call per signal), computes each kind with whole-array operations and writes
    every reading into one preallocated byte buffer. Every floating-point operation is the
    one of the straightforward per-kind model (same operands, same order, same array layout
    for the transcendental functions), so the readings are byte for byte those of that model.
    """

    def __init__(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        payload_bytes: int = 256,
        id_prefix: str = "dev",
        fault_rate_per_s: float = 1e-4,
        drift_rate_per_s: float = 2e-4,
        repair_s: float = 120.0,
        wall_ns: Callable[[], int] = time.time_ns,
        device_ids: Sequence[str] | None = None,
    ) -> None:
        if n < 1:
            raise ConfigError(f"devices must be >= 1, got {n}", field="devices", value=n)
        if payload_bytes < MIN_PAYLOAD_BYTES or payload_bytes > 262_144:
            raise ConfigError(
                f"payload_bytes must be in [{MIN_PAYLOAD_BYTES}, 262144], got {payload_bytes}",
                field="payload_bytes",
                value=payload_bytes,
                allowed=f"[{MIN_PAYLOAD_BYTES}, 262144]",
            )
        if min(fault_rate_per_s, drift_rate_per_s) < 0 or repair_s <= 0:
            raise ConfigError("rates must be >= 0 and repair_s > 0", field="fault_rate_per_s")
        self.n = n
        self.rng = rng
        self.payload_bytes = payload_bytes
        self.fault_rate_per_s = fault_rate_per_s
        self.drift_rate_per_s = drift_rate_per_s
        self.repair_s = repair_s
        self._wall_ns = wall_ns
        if device_ids is None:
            self.device_ids = [f"{id_prefix}{i:05d}" for i in range(n)]
            check_sender_id(self.device_ids[0])  # the others differ only in their digits
        else:
            self.device_ids = [str(d) for d in device_ids]
            if len(self.device_ids) != n or len(set(self.device_ids)) != n:
                raise ConfigError(
                    f"device_ids must be {n} unique IDs", field="device_ids", value=len(device_ids)
                )
            for d in self.device_ids:
                check_sender_id(d)
        self.kinds = [KINDS[i % len(KINDS)] for i in range(n)]
        self._id_bytes = [d.encode() for d in self.device_ids]
        self.t = 0.0
        self.health = np.zeros(n, dtype=np.int8)
        self.drift = np.zeros(n)
        self.drift_rate = rng.uniform(0.01, 0.05, n)
        self.phase = rng.uniform(0.0, 2 * np.pi, n)
        self.rated_kw = rng.uniform(5.0, 75.0, n)
        self.energy_kwh = rng.uniform(0.0, 1e4, n)
        self.repair_at = np.full(n, np.inf)
        self._layout()

    def _samples(self, kind: str, idx: int) -> int:
        """Raw samples that fit in device ``idx``'s reading of ``kind`` (<= 65535)."""
        fixed = _REC.size + len(self._id_bytes[idx]) + 8 * len(VALUE_NAMES[kind])
        return min(65535, max(0, (self.payload_bytes - fixed) // 4))

    def _layout(self) -> None:
        """Lay out the per-fleet constants: output order, encode buffer, noise, time bases.

        Device ``i`` has kind ``KINDS[i % 4]``, so kind ``k`` is the strided slice ``k::4``;
        readings come out kind by kind (``KINDS`` order), each kind in device order.
        """
        n = self.n
        nk = len(KINDS)
        #: kinds present, as (kind code 0..3, device slice, rows, wave width generated)
        self._present: list[tuple[int, slice, int, int]] = []
        order: list[int] = []
        for k, kind in enumerate(KINDS):
            idx = list(range(k, n, nk))
            if not idx:
                continue
            width = max(max(self._samples(kind, i) for i in idx), 1)
            self._present.append((k, slice(k, n, nk), len(idx), width))
            order.extend(idx)
        self._order = np.array(order, dtype=np.intp)
        self._out_ids = [self.device_ids[i] for i in order]

        # -- encode buffer: every reading of a step, back to back in output order
        sizes: list[int] = []
        for i in order:
            kind = self.kinds[i]
            body = _REC.size + len(self._id_bytes[i]) + 8 * len(VALUE_NAMES[kind])
            sizes.append(max(body + 4 * self._samples(kind, i), self.payload_bytes))
        starts = np.concatenate(([0], np.cumsum(sizes))).astype(int).tolist()
        self._buf = np.zeros(starts[-1], dtype=np.uint8)
        self._bounds = list(itertools.pairwise(starts))
        self._segs: list[list[_Segment]] = [[] for _ in KINDS]
        #: (rows of the buffer, device indices) whose headers are rewritten each step
        self._heads: list[tuple[NDArray[np.uint8], NDArray[np.intp]]] = []
        row = 0
        for k, _sl, m, _width in self._present:
            kind = KINDS[k]
            nval = len(VALUE_NAMES[kind])
            a = 0
            while a < m:  # runs of equal ID length share one layout
                i0 = order[row + a]
                b = a
                while b < m and len(self._id_bytes[order[row + b]]) == len(self._id_bytes[i0]):
                    b += 1
                idlen = len(self._id_bytes[i0])
                ns = self._samples(kind, i0)
                size = sizes[row + a]
                lo = starts[row + a]
                rows = self._buf[lo : lo + (b - a) * size].reshape(b - a, size)
                head = _REC.pack(k + 1, 0, nval, idlen, ns, 0.0, 0)
                rows[:, : _REC.size] = np.frombuffer(head, dtype=np.uint8)
                for r in range(a, b):
                    rows[r - a, _REC.size : _REC.size + idlen] = np.frombuffer(
                        self._id_bytes[order[row + r]], dtype=np.uint8
                    )
                vo = _REC.size + idlen
                wo = vo + 8 * nval
                self._segs[k].append(
                    _Segment(
                        a,
                        b,
                        ns,
                        rows[:, vo:wo].view(">f8"),
                        rows[:, wo : wo + 4 * ns].view("<f4"),
                        a == 0 and b == m,
                    )
                )
                self._heads.append((rows, self._order[row + a : row + b]))
                a = b
            row += m
        if len(set(sizes)) == 1:  # one header write for the whole fleet
            self._heads = [(self._buf.reshape(n, sizes[0]), self._order)]

        # -- Gaussian noise of one sample, in draw order: (count, scale) per draw
        draws: list[list[tuple[int, float]]] = [[] for _ in KINDS]
        for k, _sl, m, w in self._present:
            draws[k] = [
                [(m, 0.15), (m * w, 0.15)],
                [(m * max(w, 256), 0.2)],
                [(m, 0.05), (m, 1.5), (m * w, 2.0)],
                [(m, 0.2), (m * w, 0.5)],
            ][k]
        self._draws = draws
        total = n + sum(c for d in draws for c, _ in d)
        #: one buffer and one scale vector for all draws, unless a sample's noise is large
        self._zbuf: NDArray[np.float64] | None = None
        self._zscale = np.empty(0)
        self._zload = np.empty(0)
        self._zviews: list[list[NDArray[np.float64]]] = [[] for _ in KINDS]
        if total <= _ONE_DRAW_MAX:
            self._zbuf = np.empty(total)
            scales = [np.full(n, 0.03)]
            off = n
            self._zload = self._zbuf[:n]
            for k, d in enumerate(draws):
                for c, sc in d:
                    self._zviews[k].append(self._zbuf[off : off + c])
                    scales.append(np.full(c, sc))
                    off += c
            self._zscale = np.concatenate(scales)

        # -- time bases of the waveforms (computed as the per-step model computes them)
        self._vib_base = np.empty(0)
        self._vib_decay = np.empty(0)
        self._pow_base = np.empty(0)
        for k, _sl, _m, width in self._present:
            if k == 1:
                nv = max(width, 256)
                self._vib_base = np.arange(nv) / _FS_HZ
                period = int(_FS_HZ / _BPFO_HZ)
                impulses = np.zeros(nv)
                impulses[:: max(period, 1)] = 1.0
                self._vib_decay = np.convolve(impulses, np.exp(-np.arange(12) / 2.0))[:nv]
            elif k == 2:
                self._pow_base = np.arange(width) / _FS_HZ
        #: transition thresholds (fault, drift) for the last (dt, fault rate, drift rate)
        self._lim_key = (-1.0, -1.0, -1.0)
        self._lim = np.zeros((2, 1))

    def _advance_health(self, t: float, dt: float) -> None:
        """Advance the health chain to time ``t`` (s) over ``dt`` (s); drifting sensors drift."""
        u = self.rng.random((2, self.n))
        h = self.health
        key = (dt, self.fault_rate_per_s, self.drift_rate_per_s)
        if key != self._lim_key:
            self._lim = np.array([[self.fault_rate_per_s * dt], [self.drift_rate_per_s * dt]])
            self._lim_key = key
        # Any transition at all? (rare: most steps only accumulate the drift of drifting ones)
        # (np.count_nonzero: ndarray.any goes through a Python wrapper, ~1 us a call)
        if np.count_nonzero(u < self._lim) or np.count_nonzero(self.repair_at <= t):
            to_fault = (h != 1) & (u[0] < self.fault_rate_per_s * dt)
            to_drift = (h == 0) & ~to_fault & (u[1] < self.drift_rate_per_s * dt)
            repaired = (h == 1) & (self.repair_at <= t)
            h[repaired] = 0
            self.drift[repaired] = 0.0
            self.repair_at[repaired] = np.inf
            h[to_drift] = 2
            h[to_fault] = 1
            if to_fault.any():
                self.repair_at[to_fault] = t + self.rng.exponential(
                    self.repair_s, int(to_fault.sum())
                )
        # drift[h == 2] += drift_rate[h == 2] * dt, the same sums without the gather/scatter
        np.add(self.drift, self.drift_rate * dt, out=self.drift, where=h == 2)

    def step(self, dt_s: float, count: int = 1) -> list[tuple[str, bytes]]:
        """Advance ``dt_s`` seconds; each device samples ``count`` times, evenly spaced.

        Returns
        -------
        list of (device_id, encoded reading)
            ``n * count`` readings, grouped by sample time.
        """
        if dt_s <= 0 or count < 1:
            raise ConfigError("dt_s must be > 0 and count >= 1", field="dt_s", value=dt_s)
        out: list[tuple[str, bytes]] = []
        sub = dt_s / count
        for _ in range(count):
            self.t += sub
            self._advance_health(self.t, sub)
            out.extend(self._sample(self.t, sub))
        return out

    def _noise(self) -> tuple[NDArray[np.float64], list[list[NDArray[np.float64]]]]:
        """Draw one sample's Gaussian noise, scaled: the load's and each kind's, in order.

        ``rng.normal(0, s, size)`` is ``0.0 + s * standard_normal`` element by element, the
        same stream whatever the call boundaries; ``+ 0.0`` only turns ``-0.0`` into ``0.0``
        and every noise term is added to a nonzero number (or to ``+0.0``), so scaling alone
        gives the same sums.
        """
        rng = self.rng
        if self._zbuf is not None:
            rng.standard_normal(out=self._zbuf)
            self._zbuf *= self._zscale
            return self._zload, self._zviews
        zload = 0.03 * rng.standard_normal(self.n)
        views: list[list[NDArray[np.float64]]] = [
            [sc * rng.standard_normal(c) for c, sc in d] for d in self._draws
        ]
        return zload, views

    def _sample(self, t: float, dt: float) -> list[tuple[str, bytes]]:
        """Sample every device at time ``t`` (s), ``dt`` (s) after the previous sample."""
        zload, z = self._noise()
        load = np.sin(_TWO_PI * t / 600.0 + self.phase)
        load *= 0.3
        load += 0.6
        load += zload
        np.maximum(load, 0.05, out=load)
        np.minimum(load, 1.0, out=load)
        ts = self._wall_ns()
        hf = self.health == 1
        anyfault = np.count_nonzero(hf) > 0
        # gain error of the power and energy meters' current transformers (none below 3 devices)
        gain = 1.0 + 0.2 * self.drift if self.n > 2 else self.drift
        for k, sl, m, width in self._present:
            fault = hf[sl] if anyfault else None
            if k == 0:
                self._temperature(z[0], load[sl], fault, self.drift[sl], t, m, width)
            elif k == 1:
                self._vibration(z[1], load[sl], fault, self.drift[sl], t, m, width)
            elif k == 2:
                self._power(z[2], load[sl], fault, gain[sl], self.rated_kw[sl], t, m, width)
            else:
                self._energy(z[3], load[sl], fault, gain[sl], self.rated_kw[sl], sl, dt, m)
        tts = np.frombuffer(_TTS.pack(t, ts), dtype=np.uint8)
        h = self.health
        for rows, devs in self._heads:
            rows[:, 1] = h[devs]  # health byte
            rows[:, _TTS_AT : _REC.size] = tts
        raw = self._buf.tobytes()
        return list(zip(self._out_ids, [raw[a:b] for a, b in self._bounds], strict=True))

    def _put(
        self,
        k: int,
        cols: list[NDArray[np.float64] | np.float64],
        wave: NDArray[np.float64],
    ) -> None:
        """Write kind ``k``'s values (one array or scalar per value) and samples."""
        for sg in self._segs[k]:
            v = sg.vals
            if sg.whole:  # the usual case: one layout for all devices of the kind
                for j, c in enumerate(cols):
                    v[:, j] = c
                if sg.ns:
                    sg.wave[...] = wave[:, : sg.ns]
                continue
            a, b = sg.a, sg.b
            for j, c in enumerate(cols):
                v[:, j] = c[a:b] if isinstance(c, np.ndarray) else c
            if sg.ns:
                sg.wave[...] = wave[a:b, : sg.ns]

    # -- signal models. Each mirrors the straightforward model operation for operation:
    #    ``0.0 + s * z`` noise terms, ``x ** 2`` as ``np.square``, ``np.mean(x, axis=1)`` as
    #    ``np.add.reduce(x, axis=1) / count`` (what ``np.mean`` computes), ``np.clip`` as
    #    maximum/minimum, ``x + np.where(fault, c, 0.0)`` skipped where nothing is faulty
    #    (adding +0.0 to a nonzero number is exact).
    def _temperature(
        self,
        z: list[NDArray[np.float64]],
        load: NDArray[np.float64],
        fault: NDArray[np.bool_] | None,
        drift: NDArray[np.float64],
        t: float,
        m: int,
        s: int,
    ) -> None:
        ambient = 22.0 + 2.0 * np.sin(_TWO_PI * t / 86400.0)
        true = 35.0 * load
        true += ambient
        if fault is not None:
            true += np.where(fault, 25.0, 0.0)
        meas = true + drift
        meas += z[0]
        wave = z[1].reshape(m, s)
        wave += meas[:, None]
        self._put(0, [meas, ambient], wave)

    def _vibration(
        self,
        z: list[NDArray[np.float64]],
        load: NDArray[np.float64],
        fault: NDArray[np.bool_] | None,
        drift: NDArray[np.float64],
        t: float,
        m: int,
        s: int,
    ) -> None:
        nv = max(s, 256)
        tt = t + self._vib_base
        basis = np.sin(_SHAFT_W * tt)
        basis += 0.3 * np.sin(_HARM_W * tt + 0.7)
        amp = 3.0 * load
        amp += 1.0
        amp2 = amp[:, None]
        wave = amp2 * basis
        wave += z[0].reshape(m, nv)
        if fault is not None and np.count_nonzero(fault):
            wave[fault] += 6.0 * amp2[fault] * self._vib_decay[None, :]
        wave *= (1.0 + drift)[:, None]
        rms = np.sqrt(np.add.reduce(np.square(wave), axis=1) / nv)
        peak = np.maximum.reduce(np.abs(wave), axis=1)
        centred = wave - (np.add.reduce(wave, axis=1) / nv)[:, None]
        m2 = np.add.reduce(np.square(centred), axis=1) / nv
        # the fourth power as the square of the square: NumPy's AVX-512 ``pow`` takes a slow
        # scalar path for negative bases (~1/3 of a step), and its bits differ between CPUs
        # (glibc's ``pow`` without AVX-512); squares are fast and the same everywhere
        kurt = np.add.reduce(np.square(np.square(centred)), axis=1) / nv
        kurt /= np.maximum(np.square(m2), 1e-12)
        crest = peak / np.maximum(rms, 1e-12)
        self._put(1, [rms, peak, crest, kurt], wave)

    def _power(
        self,
        z: list[NDArray[np.float64]],
        load: NDArray[np.float64],
        fault: NDArray[np.bool_] | None,
        gain: NDArray[np.float64],
        rated: NDArray[np.float64],
        t: float,
        m: int,
        s: int,
    ) -> None:
        p = rated * load
        p *= gain
        p += z[0]
        pf = 0.15 * load
        pf += 0.80
        v = z[1] + 400.0
        if fault is not None:
            pf = np.where(fault, 0.6, pf)
            v = np.where(fault, 340.0, 400.0) + z[1]
        q = np.maximum(pf, 0.05)
        np.minimum(q, 1.0, out=q)
        q = p * np.tan(np.arccos(q))
        wave = (v * _SQRT2)[:, None] * np.sin(_MAINS_W * (t + self._pow_base))
        wave += z[2].reshape(m, s)
        self._put(2, [p, q, pf, v], wave)

    def _energy(
        self,
        z: list[NDArray[np.float64]],
        load: NDArray[np.float64],
        fault: NDArray[np.bool_] | None,
        gain: NDArray[np.float64],
        rated: NDArray[np.float64],
        sl: slice,
        dt: float,
        m: int,
    ) -> None:
        line_kw = 4.0 * rated
        line_kw *= load
        line_kw *= gain
        line_kw += z[0]
        # A faulty meter (lost CT input) reads zero power and its counter stalls.
        if fault is not None:
            line_kw = np.where(fault, 0.0, line_kw)
        energy = self.energy_kwh[sl]
        energy += np.maximum(line_kw, 0.0) * dt / 3600.0
        wave = z[1].reshape(m, -1)
        wave += line_kw[:, None]
        self._put(3, [energy, line_kw], wave)
