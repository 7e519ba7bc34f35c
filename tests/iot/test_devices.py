"""Simulated devices: determinism, payload size, fault signatures, aggregate encoding."""

from __future__ import annotations

import numpy as np
import pytest

from qkdtwin.errors import ConfigError, MalformedEnvelopeError
from qkdtwin.iot.devices import (
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
