"""Pin the public API of qkdtwin.iot: the live twin (issue 8) imports these names."""

from __future__ import annotations

import dataclasses

import qkdtwin.iot as iot
from qkdtwin.errors import KeyExhaustedError


def test_exports_sorted_and_present():
    assert iot.__all__ == sorted(iot.__all__, key=lambda s: (not s.isupper(), s))
    for name in iot.__all__:
        assert hasattr(iot, name), name
    assert {
        "TelemetryConfig",
        "TelemetrySession",
        "IntervalReport",
        "Reading",
        "QkdKeySource",
        "KmeKeySource",
        "StoreKeySource",
        "GatedKeySource",
        "LocalKeyPair",
        "DevKmePair",
    } <= set(iot.__all__)


def test_contract_fields():
    fields = {f.name for f in dataclasses.fields(iot.IntervalReport)}
    assert {
        "sent",
        "delivered",
        "decrypt_failures",
        "rejected",
        "dropped",
        "queued",
        "qkd_key_bits_consumed",
        "latency_ms_p50",
        "latency_ms_p99",
        "latest",
    } <= fields
    assert {"device_id", "kind", "t", "values", "health"} <= {
        f.name for f in dataclasses.fields(iot.Reading)
    }
    cfg = iot.TelemetryConfig()
    assert (cfg.scheme, cfg.mode, cfg.broker) == ("fixed", "hybrid", "embedded")
    for name in (
        "devices",
        "payload_bytes",
        "rekey_messages",
        "rekey_seconds",
        "seed",
        "group_id",
        "edge_id",
    ):
        assert hasattr(cfg, name)
    assert issubclass(KeyExhaustedError, Exception)
    assert isinstance(iot.GatedKeySource(iot.GatedKeySource(None)), iot.QkdKeySource)  # type: ignore[arg-type]
