"""The link-telemetry schema: the committed JSON Schema, validation, and its error messages."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.interfaces import (
    SCHEMA_VERSION,
    LinkTelemetry,
    json_schema,
    parse_link_telemetry,
    perf_topic,
    schema_path,
)


def message(**over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "schema_version": 1,
        "module_id": "qkd-M1-M2",
        "link_id": "M1-M2",
        "local_node": "M1",
        "remote_node": "M2",
        "seq": 7,
        "interval_start": 1000.0,
        "interval_end": 1001.0,
        "protocol": "decoy-bb84",
        "repetition_rate_hz": 2e6,
        "intensities": [
            {"intensity": 0.48, "sent": 666_000, "detected": 3_300, "sifted": 1_650, "errors": 55},
            {"intensity": 0.1, "sent": 667_000, "detected": 700, "sifted": 350, "errors": 14},
            {"intensity": 0.0, "sent": 667_000, "detected": 1, "sifted": 1, "errors": 1},
        ],
        "sifted_bits": 1_650,
        "errors": 55,
        "qber": 55 / 1650,
        "secret_bits": 400,
        "qkdl_performance": {
            "skr": 400.0,
            "eskr": 256.0,
            "phys_perf": [{"perf_type": "QBER", "value": 55 / 1650}],
        },
        "detector_monitor": {"photocurrent_ua": 0.1, "samples": 100},
    }
    body.update(over)
    return body


def test_committed_schema_matches_the_model():
    committed = json.loads(schema_path().read_text())
    assert committed == json.loads(json.dumps(json_schema()))


def test_a_valid_message_passes_pydantic_and_the_json_schema():
    body = message()
    msg = parse_link_telemetry(json.dumps(body).encode())
    assert isinstance(msg, LinkTelemetry)
    assert msg.duration_s == pytest.approx(1.0)
    validator = jsonschema_rs.validator_for(json.loads(schema_path().read_text()))
    assert validator.is_valid(body)
    # the model's own JSON round-trips and validates against the committed schema too
    assert validator.is_valid(json.loads(msg.model_dump_json()))


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"seq": -1}, "seq"),
        ({"interval_end": 999.0}, "interval_end"),
        ({"intensities": []}, "intensities"),
        ({"qber": 1.5}, "qber"),
        ({"surprise": 1}, "surprise"),
        ({"module_id": "a/b"}, "module_id"),
    ],
)
def test_violations_name_the_field_and_fail_the_json_schema_too(over, field):
    body = message(**over)
    with pytest.raises(ConfigError) as err:
        parse_link_telemetry(body)
    assert field in str(err.value)
    validator = jsonschema_rs.validator_for(json.loads(schema_path().read_text()))
    if field not in ("interval_end",):  # cross-field rules live in the model only
        assert not validator.is_valid(body)


def test_counts_must_be_ordered():
    bad = message()
    bad["intensities"] = [{"intensity": 0.5, "sent": 10, "detected": 20, "sifted": 1, "errors": 0}]
    with pytest.raises(ConfigError, match="errors <= sifted <= detected <= sent"):
        parse_link_telemetry(bad)


def test_other_schema_version_is_its_own_error():
    with pytest.raises(ConfigError) as err:
        parse_link_telemetry(message(schema_version=2))
    assert err.value.field == "schema_version"
    assert "2" in str(err.value)
    assert str(SCHEMA_VERSION) in str(err.value)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b"null"])
def test_garbage_is_a_config_error(raw):
    with pytest.raises(ConfigError):
        parse_link_telemetry(raw)


def test_topic():
    assert perf_topic("qkd-M1-M2") == "qkdtwin/link/v1/qkd-M1-M2/perf"
