"""Link telemetry: what a QKD module reports, once per reporting interval, over MQTT.

This is the contract between the physical side (a QKD module of the plant, or a real one
behind an adapter) and the twin's ingest. It carries only what a module measures, never a
true parameter of the link.

Topic tree (MQTT, QoS 1, not retained)::

    qkdtwin/link/v1/<module_id>/perf     one LinkTelemetry message per reporting interval
    qkdtwin/link/v1/<module_id>/state    module birth/death (JSON: {"module_id", "state"})

Message (JSON, UTF-8), schema version 1 (:data:`SCHEMA_VERSION`):

* identity: ``module_id``, ``link_id`` (the topology's canonical ``A-B``), ``local_node`` and
  ``remote_node`` (Alice's and Bob's sides), ``seq`` (0, 1, 2, ... per module; the ingest's
  de-duplication key is ``(module_id, seq)``);
* timing: ``interval_start`` and ``interval_end`` (Unix seconds on the module's clock);
* ``protocol`` and ``repetition_rate_hz``;
* ``intensities``: per intensity class (signal first, then the decoys), the mean photon
  number and the counts of the interval: pulses ``sent``, pulses with at least one click
  (``detected``), detected pulses whose bases matched (``sifted``) and the ``errors`` among
  them. ETSI GS QKD 015 has no per-intensity counts; they are this schema's extension;
* ``sifted_bits``, ``errors``, ``qber``: the key class's (signal) sifted bits, errors and QBER;
  ``secret_bits``: final key the module produced in the interval;
* ``qkdl_performance``: the link performance as ETSI GS QKD 015 names it (``skr``: secret key
  rate, bit/s; ``eskr``: effective secret key rate after the module's own overheads, bit/s;
  ``expected_consumption``: key the module expects its SAEs to draw, bit/s, if known;
  ``phys_perf``: ``[{"perf_type": "QBER", "value": ...}]``);
* ``detector_monitor`` (optional): the mean photocurrent of Bob's detectors over the interval
  (µA) and the number of samples it averages. Counts alone cannot reveal a faked-state
  blinding attack, which keeps yields and QBER as an honest channel would; a monitor can.

JSON Schema: :func:`json_schema` (committed as ``schemas/link-telemetry-v1.schema.json``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qkdtwin.errors import ConfigError

__all__ = [
    "SCHEMA_VERSION",
    "TOPIC_ROOT",
    "DetectorMonitor",
    "IntensityCounts",
    "LinkTelemetry",
    "PhysPerf",
    "QkdlPerformance",
    "json_schema",
    "parse_link_telemetry",
    "perf_topic",
    "schema_path",
    "state_topic",
]

#: Version of the message layout; a message with another version is rejected by the ingest.
SCHEMA_VERSION = 1
#: Root of the link-telemetry topic tree.
TOPIC_ROOT = "qkdtwin/link/v1"


def perf_topic(module_id: str) -> str:
    """Topic of a module's per-interval performance messages."""
    return f"{TOPIC_ROOT}/{module_id}/perf"


def state_topic(module_id: str) -> str:
    """Topic of a module's birth/death messages."""
    return f"{TOPIC_ROOT}/{module_id}/state"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntensityCounts(_Strict):
    """Counts of one intensity class over one interval (schema extension to ETSI 015)."""

    intensity: float = Field(ge=0.0, le=100.0, description="mean photon number per pulse")
    sent: int = Field(ge=0, description="pulses sent in this class")
    detected: int = Field(ge=0, description="pulses with at least one click at Bob")
    sifted: int = Field(ge=0, description="detected pulses whose bases matched")
    errors: int = Field(ge=0, description="sifted pulses whose bit differs")

    @model_validator(mode="after")
    def _ordered(self) -> IntensityCounts:
        if not (self.errors <= self.sifted <= self.detected <= self.sent):
            raise ValueError("counts must satisfy errors <= sifted <= detected <= sent")
        return self


class PhysPerf(_Strict):
    """One physical performance figure (ETSI GS QKD 015 ``phys_perf`` entry)."""

    perf_type: Literal["QBER", "SNR"]
    value: float


class QkdlPerformance(_Strict):
    """Link performance in the names of ETSI GS QKD 015 (``qkdl_performance``)."""

    skr: float = Field(ge=0.0, description="secret key rate, bit/s")
    eskr: float = Field(ge=0.0, description="effective secret key rate, bit/s")
    expected_consumption: float | None = Field(
        default=None, ge=0.0, description="key the SAEs are expected to draw, bit/s"
    )
    phys_perf: list[PhysPerf] = Field(default_factory=list)


class DetectorMonitor(_Strict):
    """Optional detector monitor: mean photocurrent of Bob's detectors over the interval."""

    photocurrent_ua: float = Field(ge=0.0, description="mean photocurrent, µA")
    samples: int = Field(ge=1, description="samples averaged")


class LinkTelemetry(_Strict):
    """One message of a QKD module: its measurements over one reporting interval."""

    schema_version: Literal[1] = 1
    module_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    link_id: str = Field(min_length=3, max_length=256)
    local_node: str = Field(min_length=1, max_length=128)
    remote_node: str = Field(min_length=1, max_length=128)
    seq: int = Field(ge=0, description="per-module sequence number")
    interval_start: float = Field(description="Unix time, s (module clock)")
    interval_end: float = Field(description="Unix time, s (module clock)")
    protocol: str = Field(min_length=1, max_length=32)
    repetition_rate_hz: float = Field(gt=0.0)
    intensities: list[IntensityCounts] = Field(min_length=1, max_length=8)
    sifted_bits: int = Field(ge=0)
    errors: int = Field(ge=0)
    qber: float | None = Field(ge=0.0, le=1.0)
    secret_bits: int = Field(ge=0)
    qkdl_performance: QkdlPerformance
    detector_monitor: DetectorMonitor | None = None

    @model_validator(mode="after")
    def _interval(self) -> LinkTelemetry:
        if not self.interval_end > self.interval_start:
            raise ValueError("interval_end must be after interval_start")
        if self.errors > self.sifted_bits:
            raise ValueError("errors must be <= sifted_bits")
        return self

    @property
    def duration_s(self) -> float:
        """Length of the reporting interval, s."""
        return self.interval_end - self.interval_start


def parse_link_telemetry(payload: bytes | str | dict[str, Any]) -> LinkTelemetry:
    """Validate one message (raw JSON bytes/str or a parsed mapping).

    Raises
    ------
    ConfigError
        ``field="schema_version"`` for another schema version, otherwise the first invalid
        field (``field`` names it); the message says what is wrong. Never anything else.
    """
    if isinstance(payload, bytes | str):
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"not JSON: {exc}", field="payload") from None
    else:
        data = payload
    if not isinstance(data, dict):
        raise ConfigError("a link telemetry message must be a JSON object", field="payload")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"schema_version {version!r} is not supported (this twin reads {SCHEMA_VERSION})",
            field="schema_version",
            value=version,
            allowed=str(SCHEMA_VERSION),
        )
    try:
        return LinkTelemetry.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.from_validation(exc, default_field="payload") from None


def json_schema() -> dict[str, Any]:  # a JSON Schema document, not a fixed shape
    """JSON Schema (draft 2020-12) of :class:`LinkTelemetry`, generated from the model."""
    schema = LinkTelemetry.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://qkdtwin.invalid/schemas/link-telemetry-v1.schema.json"
    schema["title"] = "qkdtwin link telemetry, schema version 1"
    return schema


def schema_path() -> Path:
    """Path of the committed JSON Schema file (package data)."""
    return Path(
        str(resources.files("qkdtwin.interfaces").joinpath("schemas/link-telemetry-v1.schema.json"))
    )
