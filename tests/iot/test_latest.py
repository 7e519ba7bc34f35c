"""Latest readings kept encoded: the check agrees with the decoder, the mapping with a dict of
decoded readings, and no reading object outlives the interval that delivered it."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from qkdtwin.errors import ConfigError, MalformedEnvelopeError
from qkdtwin.iot import LatestReadings, MemoryBus, Reading, TelemetryConfig, TelemetrySession
from qkdtwin.iot.devices import DeviceFleet, check_reading, decode_reading, reading_health


def _readings(n: int = 12, seed: int = 5) -> list[tuple[str, bytes]]:
    fleet = DeviceFleet(
        n, np.random.default_rng(seed), fault_rate_per_s=0.05, drift_rate_per_s=0.05
    )
    out: list[tuple[str, bytes]] = []
    for _ in range(20):  # long enough for every health label to occur
        out += fleet.step(1.0)
    return out


def _outcome(fn, data: bytes):
    try:
        return fn(data)
    except MalformedEnvelopeError as exc:
        return exc.reason


def test_check_refuses_exactly_what_the_decoder_refuses() -> None:
    """The decoder is the reference: on valid readings and ~6,000 corrupted ones (truncated,
    bytes overwritten in and after the header, bytes appended) both refuse the same inputs
    with the same reason, and where both accept, the ID, time stamp and health agree."""
    rng = np.random.default_rng(11)
    valid = _readings()
    assert {decode_reading(r).health for _d, r in valid} == {"ok", "fault", "drift"}
    cases = [r for _d, r in valid]
    for _ in range(2000):
        data = bytearray(cases[int(rng.integers(len(valid)))])
        cut = int(rng.integers(0, len(data) + 1))
        cases.append(bytes(data[:cut]))
        flipped = bytearray(data)
        for at in rng.integers(0, min(len(data), 60), size=int(rng.integers(1, 4))):
            flipped[at] = int(rng.integers(256))
        cases.append(bytes(flipped))
        cases.append(bytes(data) + bytes(rng.integers(0, 256, size=int(rng.integers(1, 9)))))
    accepted = refused = 0
    for data in cases:
        got, want = _outcome(check_reading, data), _outcome(decode_reading, data)
        if isinstance(want, Reading):
            assert got == (want.device_id, want.ts_ns)
            assert reading_health(data) == want.health
            accepted += 1
        else:
            assert got == want == "bad_payload"
            refused += 1
    assert accepted > 2000
    assert refused > 1000


def test_latest_readings_behave_as_a_dict_of_decoded_readings() -> None:
    valid = _readings(n=6)
    latest = LatestReadings()
    reference: dict[str, Reading] = {}
    snapshot = None
    for i, (dev, data) in enumerate(valid):
        latest.set_encoded(dev, data)
        reference[dev] = decode_reading(data)
        if i == 20:
            snapshot, frozen = latest.copy(), dict(reference)
    assert dict(latest) == reference
    assert list(latest) == list(reference)  # devices in the order first seen
    assert latest == reference  # Mapping equality, value by value
    assert {d: latest.health(d) for d in latest} == {d: r.health for d, r in reference.items()}
    assert all(latest.encoded(d) == r.raw for d, r in reference.items())
    assert snapshot is not None
    assert dict(snapshot) == frozen
    assert "nobody" not in latest
    assert len(latest) == 6
    with pytest.raises(KeyError):
        latest["nobody"]
    assert latest[valid[0][0]] is not latest[valid[0][0]]  # decoded anew on each access
    assert repr(latest) == "LatestReadings(6 devices)"


@pytest.mark.parametrize("scheme", ["fixed", "mobile"])
def test_no_reading_object_outlives_its_interval(pair, scheme: str) -> None:
    """Each delivered reading used to live, decoded, until the device's next one: two objects
    the garbage collector tracks per device, promoted to its oldest generation every interval
    (at 10,000 devices a full collection every ~17 ticks). Between intervals none may exist;
    the report still holds every device's latest reading, equal to the fleet's own."""
    cfg = TelemetryConfig(scheme=scheme, devices=40, broker="memory", edge_id="gw0")
    with TelemetrySession(cfg, pair.gateway_source, pair.aggregator_source, bus=MemoryBus()) as s:
        for _ in range(3):
            rep = s.run_interval()
        assert rep.delivered == 40
        assert [o for o in gc.get_objects() if type(o) is Reading] == []
        assert not gc.is_tracked(rep.latest._encoded)  # bytes by device ID only
        assert set(rep.latest) == set(s.fleet.device_ids)
        for dev in s.fleet.device_ids:
            r = rep.latest[dev]
            assert r.device_id == dev
            assert r.t == pytest.approx(3 * cfg.interval_s)
        with s.aggregator.lock:
            assert dict(s.aggregator.latest) == dict(rep.latest)


def test_bad_readings_are_refused_and_nothing_is_kept() -> None:
    (dev, data), (other, other_data) = _readings(n=2)[:2]
    latest = LatestReadings({dev: data})
    before = dict(latest.encoded_items())
    with pytest.raises(MalformedEnvelopeError) as bad:
        latest.set_encoded(dev, data[:10])
    assert bad.value.reason == "bad_payload"
    with pytest.raises(ConfigError) as wrong:
        latest.set_encoded(dev, other_data)  # another device's reading under dev's ID
    assert wrong.value.field == "encoded"
    assert dict(latest.encoded_items()) == before
    assert other not in latest
    with pytest.raises(MalformedEnvelopeError):
        LatestReadings({dev: b"not a reading"})
    with pytest.raises(ConfigError):
        LatestReadings({other: data})
