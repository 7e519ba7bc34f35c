"""Simulated devices: determinism, payload size, fault signatures, aggregate encoding."""

from __future__ import annotations

import itertools
import struct
import time

import numpy as np
import pytest

from qkdtwin.errors import ConfigError, MalformedEnvelopeError
from qkdtwin.iot.devices import (
    KINDS,
    MIN_PAYLOAD_BYTES,
    VALUE_NAMES,
    DeviceFleet,
    decode_aggregate,
    decode_reading,
    encode_aggregate,
)


def fleet(n=8, seed=3, **kw):
    return DeviceFleet(n, np.random.default_rng(seed), wall_ns=lambda: 42, **kw)


def test_same_seed_same_readings_and_exact_payload_size():
    a, b = fleet(payload_bytes=1024), fleet(payload_bytes=1024)
    ra, rb = a.step(1.0, 3), b.step(1.0, 3)
    assert ra == rb
    assert len(ra) == 24
    assert {len(r) for _d, r in ra} == {1024}
    assert fleet(seed=4).step(1.0) != fleet(seed=3).step(1.0)
    r = decode_reading(dict(ra)["dev00001"])  # the last of the three samples of device 1
    assert (r.kind, set(r.values), r.ts_ns) == ("vibration", set(VALUE_NAMES["vibration"]), 42)
    assert r.t == pytest.approx(1.0)


def test_fault_signatures():
    f = fleet(n=8, fault_rate_per_s=0.0, drift_rate_per_s=0.0)
    f.health[4:] = 1  # devices 4..7 faulty, 0..3 healthy
    f.repair_at[4:] = np.inf
    vals = {d: decode_reading(r) for d, r in f.step(1.0)}
    ok_vib, bad_vib = vals["dev00001"], vals["dev00005"]
    assert bad_vib.health == "fault"
    assert ok_vib.health == "ok"
    assert bad_vib.values["kurtosis"] > 3.0 > ok_vib.values["kurtosis"]  # impulsive vs sine
    assert bad_vib.values["crest_factor"] > ok_vib.values["crest_factor"]
    assert vals["dev00006"].values["voltage_v"] < 360 < vals["dev00002"].values["voltage_v"]
    assert vals["dev00007"].values["line_power_kw"] == 0.0  # a faulty meter reads nothing


def test_energy_meters_never_run_backwards_and_health_moves():
    f = fleet(n=40, fault_rate_per_s=0.01, drift_rate_per_s=0.02, repair_s=30.0)
    last = {}
    states = set()
    for _ in range(200):
        for d, rec in f.step(1.0):
            r = decode_reading(rec)
            states.add(r.health)
            if r.kind == "energy":
                assert r.values["energy_kwh"] >= last.get(d, 0.0)
                last[d] = r.values["energy_kwh"]
    assert states == {"ok", "drift", "fault"}


def test_aggregate_round_trip_and_malformed():
    recs = [r for _d, r in fleet().step(1.0)]
    assert decode_aggregate(encode_aggregate(recs)) == recs
    blob = encode_aggregate(recs)
    for bad in (blob[:-1], blob + b"\x00", b"\x00\x00\x00\x09"):
        with pytest.raises(MalformedEnvelopeError):
            decode_aggregate(bad)
    with pytest.raises(MalformedEnvelopeError):
        decode_reading(b"\x09" + recs[0][1:])


def test_bad_fleet_options():
    with pytest.raises(ConfigError):
        fleet(n=0)
    with pytest.raises(ConfigError):
        fleet(payload_bytes=10)


# -- the fast fleet against a straightforward reference of the same models -------------------
# ``_ReferenceFleet`` is the per-kind, per-device implementation DeviceFleet had before it was
# vectorised for per-call overhead; the fast one must give the same bytes and leave the random
# generator and the fleet's state where the reference leaves them.

_REC = struct.Struct("!BBBBHdQ")


class _ReferenceFleet:
    def __init__(
        self,
        n,
        rng,
        *,
        payload_bytes=256,
        id_prefix="dev",
        fault_rate_per_s=1e-4,
        drift_rate_per_s=2e-4,
        repair_s=120.0,
        wall_ns=time.time_ns,
    ):
        self.n, self.rng, self.payload_bytes = n, rng, payload_bytes
        self.fault_rate_per_s, self.drift_rate_per_s, self.repair_s = (
            fault_rate_per_s,
            drift_rate_per_s,
            repair_s,
        )
        self._wall_ns = wall_ns
        self.device_ids = [f"{id_prefix}{i:05d}" for i in range(n)]
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

    def _samples(self, kind, idx):
        fixed = _REC.size + len(self._id_bytes[idx]) + 8 * len(VALUE_NAMES[kind])
        return min(65535, max(0, (self.payload_bytes - fixed) // 4))

    def _advance_health(self, t, dt):
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

    def step(self, dt_s, count=1):
        out = []
        sub = dt_s / count
        for _ in range(count):
            self.t += sub
            self._advance_health(self.t, sub)
            out.extend(self._sample(self.t, sub))
        return out

    def _sample(self, t, dt):
        rng = self.rng
        load = np.clip(
            0.6 + 0.3 * np.sin(2 * np.pi * t / 600.0 + self.phase) + rng.normal(0, 0.03, self.n),
            0.05,
            1.0,
        )
        ts = self._wall_ns()
        out = []
        models = {
            "temperature": self._temperature,
            "vibration": self._vibration,
            "power": self._power,
            "energy": self._energy,
        }
        for kind, idx in self._groups.items():
            if idx.size == 0:
                continue
            nsamp = max(self._samples(kind, int(i)) for i in idx)
            vals, wave = models[kind](idx, load[idx], t, dt, max(nsamp, 1))
            for row, i in enumerate(idx.tolist()):
                out.append((self.device_ids[i], self._encode(i, kind, t, ts, vals[row], wave[row])))
        return out

    def _encode(self, i, kind, t, ts, vals, wave):
        ns = self._samples(kind, i)
        ident = self._id_bytes[i]
        head = _REC.pack(
            KINDS.index(kind) + 1, int(self.health[i]), len(vals), len(ident), ns, t, ts
        )
        body = head + ident + vals.astype(">f8").tobytes() + wave[:ns].tobytes()
        return body + bytes(max(0, self.payload_bytes - len(body)))

    def _temperature(self, idx, load, t, dt, s):
        m = idx.size
        h = self.health[idx]
        ambient = 22.0 + 2.0 * np.sin(2 * np.pi * t / 86400.0) + np.zeros(m)
        true = ambient + 35.0 * load + np.where(h == 1, 25.0, 0.0)
        meas = true + self.drift[idx] + self.rng.normal(0.0, 0.15, m)
        wave = meas[:, None] + self.rng.normal(0.0, 0.15, (m, s))
        return np.stack([meas, ambient], axis=1), wave.astype("<f4")

    def _vibration(self, idx, load, t, dt, s):
        m = idx.size
        n = max(s, 256)
        tt = t + np.arange(n) / 2560.0
        amp = (1.0 + 3.0 * load)[:, None]
        wave = amp * (
            np.sin(2 * np.pi * 24.6 * tt)[None, :]
            + 0.3 * np.sin(2 * np.pi * 2 * 24.6 * tt + 0.7)[None, :]
        )
        wave = wave + self.rng.normal(0.0, 0.2, (m, n))
        fault = self.health[idx] == 1
        if fault.any():
            period = int(2560.0 / 87.0)
            impulses = np.zeros(n)
            impulses[:: max(period, 1)] = 1.0
            decay = np.convolve(impulses, np.exp(-np.arange(12) / 2.0))[:n]
            wave[fault] += 6.0 * amp[fault] * decay[None, :]
        wave *= (1.0 + self.drift[idx])[:, None]
        rms = np.sqrt(np.mean(wave**2, axis=1))
        peak = np.max(np.abs(wave), axis=1)
        centred = wave - wave.mean(axis=1, keepdims=True)
        fourth = (centred**2) ** 2  # the model's fourth power: the square of the square
        kurt = np.mean(fourth, axis=1) / np.maximum(np.mean(centred**2, axis=1) ** 2, 1e-12)
        vals = np.stack([rms, peak, peak / np.maximum(rms, 1e-12), kurt], axis=1)
        return vals, wave[:, :s].astype("<f4")

    def _power(self, idx, load, t, dt, s):
        m = idx.size
        fault = self.health[idx] == 1
        gain = 1.0 + 0.2 * self.drift[idx]
        p = self.rated_kw[idx] * load * gain + self.rng.normal(0.0, 0.05, m)
        pf = np.where(fault, 0.6, 0.80 + 0.15 * load)
        q = p * np.tan(np.arccos(np.clip(pf, 0.05, 1.0)))
        v = np.where(fault, 340.0, 400.0) + self.rng.normal(0.0, 1.5, m)
        tt = t + np.arange(s) / 2560.0
        wave = (v * np.sqrt(2.0))[:, None] * np.sin(2 * np.pi * 50.0 * tt)[None, :]
        wave = wave + self.rng.normal(0.0, 2.0, (m, s))
        return np.stack([p, q, pf, v], axis=1), wave.astype("<f4")

    def _energy(self, idx, load, t, dt, s):
        m = idx.size
        line_kw = 4.0 * self.rated_kw[idx] * load * (1.0 + 0.2 * self.drift[idx])
        line_kw = line_kw + self.rng.normal(0.0, 0.2, m)
        line_kw = np.where(self.health[idx] == 1, 0.0, line_kw)
        self.energy_kwh[idx] += np.maximum(line_kw, 0.0) * dt / 3600.0
        wave = line_kw[:, None] + self.rng.normal(0.0, 0.5, (m, s))
        return np.stack([self.energy_kwh[idx], line_kw], axis=1), wave.astype("<f4")


def _twins(n, seed=11, **kw):
    """A fast fleet and a reference one, same seed, each with its own (same) ticking clock."""

    def clock():
        return itertools.count(1_700_000_000_000_000_000, 1_000_003).__next__

    return (
        DeviceFleet(n, np.random.default_rng(seed), wall_ns=clock(), **kw),
        _ReferenceFleet(n, np.random.default_rng(seed), wall_ns=clock(), **kw),
    )


def _assert_same_state(fast, ref):
    for name in ("health", "drift", "energy_kwh", "repair_at"):
        assert np.array_equal(getattr(fast, name), getattr(ref, name)), name
    assert fast.t == ref.t
    assert fast.rng.bit_generator.state == ref.rng.bit_generator.state  # same draws


@pytest.mark.parametrize("n", [1, 3, 10, 37])
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("payload_bytes", [MIN_PAYLOAD_BYTES, 256, 1000])
def test_fast_fleet_matches_reference_byte_for_byte(n, count, payload_bytes):
    # Fast health chain (fault/drift/repair every few seconds) so the fault branches run.
    kw = {"payload_bytes": payload_bytes, "fault_rate_per_s": 0.15, "drift_rate_per_s": 0.3}
    fast, ref = _twins(n, repair_s=4.0, **kw)
    seen = set()
    for k in range(30):
        dt = 0.7 if k % 3 else 1.3
        got, want = fast.step(dt, count), ref.step(dt, count)
        assert [d for d, _ in got] == [d for d, _ in want]
        assert got == want, f"step {k}"
        seen.update(decode_reading(r).health for _d, r in got)
    _assert_same_state(fast, ref)
    assert seen == {"ok", "drift", "fault"} or (n == 1 and "fault" in seen)


@pytest.mark.parametrize(
    ("n", "kw"),
    [
        # 59-character prefix: 64-character IDs; at 70 bytes most kinds carry no samples and
        # outgrow payload_bytes, so the readings differ in size.
        (9, {"payload_bytes": 70, "id_prefix": "p" * 59}),
        (6, {"payload_bytes": 130, "id_prefix": "p" * 59}),
        # Largest payloads: too many draws for one buffer, drawn signal by signal.
        (21, {"payload_bytes": 262_144}),
    ],
)
def test_fast_fleet_matches_reference_at_the_layout_edges(n, kw):
    fast, ref = _twins(n, fault_rate_per_s=0.3, drift_rate_per_s=0.3, repair_s=2.0, **kw)
    sizes = set()
    for _ in range(3):
        got = fast.step(1.0, 2)
        assert got == ref.step(1.0, 2)
        sizes.update(len(r) for _d, r in got)
    _assert_same_state(fast, ref)
    assert (len(sizes) > 1) == (kw["payload_bytes"] == 70)
    assert (fast._zbuf is None) == (n == 21)  # the path meant (white-box)


def test_fast_fleet_follows_state_changed_from_outside():
    fast, ref = _twins(8, fault_rate_per_s=0.0, drift_rate_per_s=0.0)
    for f in (fast, ref):
        f.health[4:] = 1
        f.repair_at[4:] = 3.0  # repaired during the third step
        f.health[1] = 2  # drifting, so its offset grows
    for _ in range(5):
        assert fast.step(1.0) == ref.step(1.0)
    fast.fault_rate_per_s = ref.fault_rate_per_s = 0.5  # rates read at each step
    for _ in range(5):
        assert fast.step(1.0) == ref.step(1.0)
    _assert_same_state(fast, ref)
