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

import struct
import time
from collections.abc import Callable
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
    "decode_aggregate",
    "decode_reading",
    "encode_aggregate",
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


def decode_reading(data: bytes) -> Reading:
    """Decode one encoded reading.

    Raises
    ------
    MalformedEnvelopeError
        With reason ``"bad_payload"`` if the bytes are not a reading.
    """
    try:
        kind_c, health_c, nval, idlen, nsamp, t, ts_ns = _REC.unpack_from(data, 0)
        kind = KINDS[kind_c - 1]
        health = HEALTH[health_c]
        names = VALUE_NAMES[kind]
        if nval != len(names) or kind_c < 1:
            raise ValueError("value count")
        off = _REC.size
        device_id = data[off : off + idlen].decode("ascii")
        off += idlen
        vals = struct.unpack_from(f"!{nval}d", data, off)
        if len(data) < off + 8 * nval + 4 * nsamp:
            raise ValueError("short")
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise MalformedEnvelopeError("malformed reading", reason="bad_payload") from exc
    return Reading(device_id, kind, t, dict(zip(names, vals, strict=True)), health, ts_ns, data)


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
    fault_rate_per_s, drift_rate_per_s
        Transition rates of the health chain, 1/s.
    repair_s
        Mean time to repair a fault, s.
    wall_ns
        Wall clock (ns) stamped into readings (injectable).
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
        self.device_ids = [f"{id_prefix}{i:05d}" for i in range(n)]
        for d in self.device_ids[:1]:
            check_sender_id(d)
        self.kinds = [KINDS[i % len(KINDS)] for i in range(n)]
        self._id_bytes = [d.encode() for d in self.device_ids]
        self._groups = {
            k: np.array([i for i in range(n) if self.kinds[i] == k], dtype=np.int64) for k in KINDS
        }
        self.t = 0.0
        self.health = np.zeros(n, dtype=np.int8)
        self.drift = np.zeros(n)
        self.drift_rate = rng.uniform(0.01, 0.05, n)
        self.phase = rng.uniform(0.0, 2 * np.pi, n)
        self.rated_kw = rng.uniform(5.0, 75.0, n)
        self.energy_kwh = rng.uniform(0.0, 1e4, n)
        self.repair_at = np.full(n, np.inf)

    def _samples(self, kind: str, idx: int) -> int:
        fixed = _REC.size + len(self._id_bytes[idx]) + 8 * len(VALUE_NAMES[kind])
        return min(65535, max(0, (self.payload_bytes - fixed) // 4))

    def _advance_health(self, t: float, dt: float) -> None:
        u = self.rng.random((2, self.n))
        h = self.health
        to_fault = (h != 1) & (u[0] < self.fault_rate_per_s * dt)
        to_drift = (h == 0) & ~to_fault & (u[1] < self.drift_rate_per_s * dt)
        repaired = (h == 1) & (self.repair_at <= t)
        h[repaired] = 0
        self.drift[repaired] = 0.0
        self.repair_at[repaired] = np.inf
        h[to_drift] = 2
        h[to_fault] = 1
        if to_fault.any():
            self.repair_at[to_fault] = t + self.rng.exponential(self.repair_s, int(to_fault.sum()))
        drifting = h == 2
        self.drift[drifting] += self.drift_rate[drifting] * dt

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

    def _sample(self, t: float, dt: float) -> list[tuple[str, bytes]]:
        rng = self.rng
        load = np.clip(
            0.6 + 0.3 * np.sin(2 * np.pi * t / 600.0 + self.phase) + rng.normal(0, 0.03, self.n),
            0.05,
            1.0,
        )
        ts = self._wall_ns()
        out: list[tuple[str, bytes]] = []
        for kind, idx in self._groups.items():
            if idx.size == 0:
                continue
            nsamp = max(self._samples(kind, int(i)) for i in idx)
            vals, wave = getattr(self, f"_{kind}")(idx, load[idx], t, dt, max(nsamp, 1))
            for row, i in enumerate(idx.tolist()):
                out.append((self.device_ids[i], self._encode(i, kind, t, ts, vals[row], wave[row])))
        return out

    def _encode(
        self, i: int, kind: str, t: float, ts: int, vals: NDArray[np.float64], wave: Any
    ) -> bytes:
        ns = self._samples(kind, i)
        ident = self._id_bytes[i]
        head = _REC.pack(
            KINDS.index(kind) + 1, int(self.health[i]), len(vals), len(ident), ns, t, ts
        )
        body: bytes = head + ident + vals.astype(">f8").tobytes() + wave[:ns].tobytes()
        return (
            body + bytes(self.payload_bytes - len(body)) if len(body) < self.payload_bytes else body
        )

    # -- signal models: return (values (m, k) float64, samples (m, s) little-endian float32)
    def _temperature(
        self, idx: NDArray[np.int64], load: NDArray[np.float64], t: float, dt: float, s: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        m = idx.size
        h = self.health[idx]
        ambient = 22.0 + 2.0 * np.sin(2 * np.pi * t / 86400.0) + np.zeros(m)
        true = ambient + 35.0 * load + np.where(h == 1, 25.0, 0.0)
        meas = true + self.drift[idx] + self.rng.normal(0.0, 0.15, m)
        wave = meas[:, None] + self.rng.normal(0.0, 0.15, (m, s))
        return np.stack([meas, ambient], axis=1), wave.astype("<f4")

    def _vibration(
        self, idx: NDArray[np.int64], load: NDArray[np.float64], t: float, dt: float, s: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        m = idx.size
        n = max(s, 256)
        tt = t + np.arange(n) / _FS_HZ
        amp = (1.0 + 3.0 * load)[:, None]
        wave = amp * (
            np.sin(2 * np.pi * _SHAFT_HZ * tt)[None, :]
            + 0.3 * np.sin(2 * np.pi * 2 * _SHAFT_HZ * tt + 0.7)[None, :]
        )
        wave = wave + self.rng.normal(0.0, 0.2, (m, n))
        fault = self.health[idx] == 1
        if fault.any():
            period = int(_FS_HZ / _BPFO_HZ)
            impulses = np.zeros(n)
            impulses[:: max(period, 1)] = 1.0
            decay = np.convolve(impulses, np.exp(-np.arange(12) / 2.0))[:n]
            wave[fault] += 6.0 * amp[fault] * decay[None, :]
        wave *= (1.0 + self.drift[idx])[:, None]
        rms = np.sqrt(np.mean(wave**2, axis=1))
        peak = np.max(np.abs(wave), axis=1)
        centred = wave - wave.mean(axis=1, keepdims=True)
        kurt = np.mean(centred**4, axis=1) / np.maximum(np.mean(centred**2, axis=1) ** 2, 1e-12)
        vals = np.stack([rms, peak, peak / np.maximum(rms, 1e-12), kurt], axis=1)
        return vals, wave[:, :s].astype("<f4")

    def _power(
        self, idx: NDArray[np.int64], load: NDArray[np.float64], t: float, dt: float, s: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        m = idx.size
        fault = self.health[idx] == 1
        gain = 1.0 + 0.2 * self.drift[idx]
        p = self.rated_kw[idx] * load * gain + self.rng.normal(0.0, 0.05, m)
        pf = np.where(fault, 0.6, 0.80 + 0.15 * load)
        q = p * np.tan(np.arccos(np.clip(pf, 0.05, 1.0)))
        v = np.where(fault, 340.0, 400.0) + self.rng.normal(0.0, 1.5, m)
        tt = t + np.arange(s) / _FS_HZ
        wave = (v * np.sqrt(2.0))[:, None] * np.sin(2 * np.pi * 50.0 * tt)[None, :]
        wave = wave + self.rng.normal(0.0, 2.0, (m, s))
        return np.stack([p, q, pf, v], axis=1), wave.astype("<f4")

    def _energy(
        self, idx: NDArray[np.int64], load: NDArray[np.float64], t: float, dt: float, s: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        m = idx.size
        line_kw = 4.0 * self.rated_kw[idx] * load * (1.0 + 0.2 * self.drift[idx])
        line_kw = line_kw + self.rng.normal(0.0, 0.2, m)
        # A faulty meter (lost CT input) reads zero power and its counter stalls.
        line_kw = np.where(self.health[idx] == 1, 0.0, line_kw)
        self.energy_kwh[idx] += np.maximum(line_kw, 0.0) * dt / 3600.0
        wave = line_kw[:, None] + self.rng.normal(0.0, 0.5, (m, s))
        return np.stack([self.energy_kwh[idx], line_kw], axis=1), wave.astype("<f4")
