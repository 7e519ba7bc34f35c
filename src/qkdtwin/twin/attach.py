"""Attach files: how the twin binds to a network it does not own.

An attach file names the interfaces of the operator's network and nothing else: the MQTT
broker and topics where QKD modules publish link telemetry and gateways publish IIoT traffic,
the topology (nodes, links, the demands and the policy that define key pools), per link the
module that reports it and the detector efficiency the operator *declares* for it, and per KME
its URL and the operator certificate the twin polls it with. ``qkdtwin plant serve`` writes
one for its plant; for a real network the operator writes it::

    name: plant-seed
    broker: mqtt://127.0.0.1:1883         # or mqtts://[USER@]HOST:PORT (TLS), see below
    reporting_interval_s: 1.0          # modules' reporting interval, s
    kme_poll_every_s: 15.0             # optional: poll each KME and SAE pair every 15 s,
                                       # staggered (default: every reporting interval, at
                                       # most 100 polls a second: 1,100 KMEs every 11 s)
    clock: {epoch: 1764864000.0, rate: 1.0}   # modules' clock = epoch + rate x (wall - epoch)
    network: {topology: {builder: seed}, uniform_demand: {...}, policy: ttd-balance, ...}
    links:
      M1-M2: {module_id: qkd-M1-M2, declared_detector_efficiency: 0.045}
    kmes:
      M1: {url: "https://127.0.0.1:8443", cert: operator-twin.pem, key: operator-twin.key,
           ca: ca.pem}

Optionally, ``sae_status`` lists SAE pairs whose ETSI GS QKD 014 ``status`` the twin polls with
the master SAE's certificate (``[{kme, slave_sae_id, cert, key, ca}]``): the stored key count of
the keys those two SAEs share. Optionally, ``aggregator`` grants the twin an aggregator SAE
identity, so that it decrypts the device readings instead of showing envelope metadata only::

    aggregator:
      sae_id: sae-twin                 # the twin's SAE: a slave of every gateway key
      kme: M1                          # node whose KME it sits behind (listed under kmes)
      cert: sae-twin.pem
      key: sae-twin.key
      ca: ca.pem
      kem_seed_file: aggregator-kem.seed   # hex seed of the aggregator's ML-KEM-768 key
                                           # (omit in qkd-only mode)
      group: plant                     # Sparkplug-like group of the gateways' topics
      scheme: fixed                    # fixed | mobile
      mode: hybrid                     # hybrid | qkd-only | pqc-only
      edges: {M4_GW1: sae-M4/GW1}      # edge id -> the gateway's (master) SAE ID

``iot_topic_style`` says how the gateways publish: ``qkdtwin`` (default, ``qkdtwin/v1/...``
topics) or ``sparkplug`` (Sparkplug B 3.0, ``spBv1.0/<group>/...``, protobuf payloads; the
twin then needs ``pip install 'qkdtwin[sparkplug]'``); the twin subscribes to
``spBv1.0/<group>/#`` of the ``iot`` or ``aggregator`` group, and sends its rekey commands as
Sparkplug NCMDs.

The broker may be ``mqtts://HOST:PORT`` (TLS), with ``mqtt_ca`` (the CA bundle that signed
the broker's certificate; default: the system's CAs) and ``mqtt_cert`` / ``mqtt_key`` (a
client certificate and its key, for brokers that want one), and either URL may carry a
username, ``mqtts://USER@HOST:PORT``, whose password the twin reads from the environment
variable ``QKDTWIN_MQTT_PASSWORD``: a password is never written in the file (one there is
refused, naming the field, never echoing it)::

    broker: mqtts://twin@broker.plant.example:8883
    mqtt_ca: broker-ca.pem
    mqtt_cert: twin-mqtt.pem           # optional, with mqtt_key
    mqtt_key: twin-mqtt.key

``key_size_bits`` (default 256) is the size of the keys the modules hand their KMEs: the
forecasts turn a link's key rate (bit/s) into keys per second with it. Relative certificate
paths (the KMEs', the SAEs', the MQTT TLS files) are read relative to the attach file. A
malformed file, an unknown link or node, or a missing certificate file is one
:class:`ConfigError` naming the field (``kmes.M1.cert``, ``mqtt_ca``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from qkdtwin.config import read_yaml_mapping
from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.iot.transport import parse_broker, redact_broker_url
from qkdtwin.network.scenario import Scenario, load_scenario
from qkdtwin.network.topology import link_id

__all__ = [
    "AttachAggregator",
    "AttachClock",
    "AttachFile",
    "AttachIot",
    "AttachKme",
    "AttachLink",
    "AttachSaeStatus",
    "load_attach_file",
]


_BROKER_RE = re.compile(r"mqtts?://(?:[^:@/\s]+@)?[^:@/\s]+:\d+")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttachClock(_Strict):
    """The modules' clock relative to wall time (a real network: rate 1)."""

    epoch: float = 0.0
    rate: float = Field(default=1.0, gt=0.0, le=100_000.0)

    def network_time(self, wall: float) -> float:
        """Map a wall-clock receive time to the modules' clock, s."""
        return self.epoch + self.rate * (wall - self.epoch)

    def wall_time(self, network: float) -> float:
        """Map a time on the modules' clock back to wall-clock time (the KMEs' clock), s."""
        return self.epoch + (network - self.epoch) / self.rate


class AttachLink(_Strict):
    """One QKD link as the operator declares it."""

    module_id: str = Field(min_length=1, max_length=128)
    declared_detector_efficiency: float = Field(gt=0.0, le=1.0)


class AttachKme(_Strict):
    """One KME's operator interface."""

    url: str = Field(pattern=r"^https?://")
    cert: Path
    key: Path
    ca: Path


class AttachSaeStatus(_Strict):
    """One SAE pair whose ETSI GS QKD 014 ``status`` the twin polls.

    It is polled with the master SAE's certificate: ``status`` answers only a registered SAE,
    about one pair.
    """

    kme: str
    slave_sae_id: str = Field(min_length=1, max_length=128)
    cert: Path
    key: Path
    ca: Path

    @property
    def name(self) -> str:
        """Recording key of this pair: ``sae:<kme>:<slave>``."""
        return f"sae:{self.kme}:{self.slave_sae_id}"


class AttachAggregator(_Strict):
    """An aggregator SAE identity granted to the twin: it may decrypt the device readings."""

    sae_id: str = Field(min_length=1, max_length=128)
    kme: str
    cert: Path
    key: Path
    ca: Path
    kem_seed_file: Path | None = None
    group: str = Field(min_length=1, max_length=64)
    scheme: Literal["fixed", "mobile"] = "fixed"
    mode: Literal["hybrid", "qkd-only", "pqc-only"] = "hybrid"
    edges: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _kem_when_needed(self) -> AttachAggregator:
        if self.mode != "qkd-only" and self.kem_seed_file is None:
            raise ValueError(f"kem_seed_file is required in {self.mode} mode")
        return self


class AttachIot(_Strict):
    """Where the IIoT gateways and their aggregator sit.

    The closed loop asks the gateways whose keys crossed an alarmed link to rekey (``NCMD``
    ``{"rekey": true}`` on ``qkdtwin/v1/<group>/NCMD/<edge>``; in the Sparkplug topic style a
    Sparkplug NCMD on ``spBv1.0/<group>/NCMD/<edge>`` with ``qkdtwin/rekey = true``).
    """

    group: str = Field(min_length=1, max_length=64)
    aggregator: str
    edges: dict[str, str] = Field(min_length=1, description="edge id -> its node")


class AttachFile(_Strict):
    """A validated attach file (see the module docstring)."""

    name: str = "network"
    broker: str
    mqtt_ca: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    reporting_interval_s: float = Field(default=1.0, gt=0.0, le=3600.0)
    kme_poll_every_s: float | None = Field(default=None, gt=0.0, le=3600.0)
    clock: AttachClock = Field(default_factory=AttachClock)
    network: dict[str, Any]
    links: dict[str, AttachLink]
    kmes: dict[str, AttachKme] = Field(default_factory=dict)
    sae_status: list[AttachSaeStatus] = Field(default_factory=list)
    aggregator: AttachAggregator | None = None
    iot: AttachIot | None = None
    iot_topic_style: Literal["qkdtwin", "sparkplug"] = "qkdtwin"
    key_size_bits: int = Field(default=256, ge=8, le=65_536)

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, v: str) -> str:
        if urlsplit(v).password is not None:
            raise ValueError(
                "no password in the attach file: give mqtt(s)://USER@HOST:PORT and the "
                "password in the environment variable QKDTWIN_MQTT_PASSWORD"
            )
        if _BROKER_RE.fullmatch(v) is None:
            raise ValueError(
                "must be mqtt://[USER@]HOST:PORT or mqtts://[USER@]HOST:PORT (host and port "
                f"both required, no path), got {v!r}"
            )
        return v

    @field_validator("links")
    @classmethod
    def _some_links(cls, v: dict[str, AttachLink]) -> dict[str, AttachLink]:
        if not v:
            raise ValueError("at least one link")
        return v

    def scenario(self) -> Scenario:
        """Return the network part as a validated network scenario."""
        return load_scenario(dict(self.network))

    def module_map(self) -> dict[str, str]:
        """Return the map module id -> link id."""
        return {lk.module_id: lid for lid, lk in self.links.items()}

    def iot_group(self) -> str | None:
        """Return the IIoT gateways' group (of the ``iot`` section, else of ``aggregator``)."""
        if self.iot is not None:
            return self.iot.group
        return None if self.aggregator is None else self.aggregator.group

    def broker_address(self) -> tuple[str, int]:
        """``(host, port)`` of the broker."""
        addr = parse_broker(self.broker)
        assert addr is not None
        return addr


def load_attach_file(source: str | Path | dict[str, Any]) -> AttachFile:
    """Read and validate an attach file; resolve relative certificate paths.

    Raises
    ------
    ConfigError
        For an unreadable or malformed file, an invalid field, a link that is not in the
        topology, a KME of an unknown node, a certificate file that does not exist, a password
        in the broker URL, MQTT TLS files with a plain ``mqtt://`` broker or a client
        certificate without its key; the message names the field and the attach file.
    """
    label = "<dict>" if isinstance(source, dict) else str(Path(source))
    base = Path(".") if isinstance(source, dict) else Path(source).parent
    data = read_yaml_mapping(source, what="attach file")
    try:
        att = AttachFile.model_validate(data)
    except ValidationError as exc:
        err = ConfigError.from_validation(
            exc,
            template="attach file "
            + label.replace("{", "{{").replace("}", "}}")
            + ": {field}: {msg}",
            default_field="attach",
        )
        if err.field == "broker" and isinstance(err.value, str):
            err.value = redact_broker_url(err.value)  # never keep a password around
        raise err from None
    try:
        sc = att.scenario()
    except ConfigError as exc:
        raise ConfigError(f"attach file {label}: network: {exc}", field="network") from None
    topo = sc.build_topology()
    edges = {link_id(a, b) for a, b in topo.graph.edges()}
    for lid in att.links:
        if lid not in edges:
            raise UnknownNameError(
                f"attach file {label}: links.{lid}: not a link of the topology "
                f"(links: {', '.join(sorted(edges))})",
                field=f"links.{lid}",
                value=lid,
            )

    def resolve_files(obj: BaseModel, where: str, names: tuple[str, ...]) -> None:
        for what in names:
            p = getattr(obj, what)
            if p is None:
                continue
            if not p.is_absolute():
                p = (base / p).resolve()
                setattr(obj, what, p)
            if not p.is_file():
                raise ConfigError(
                    f"attach file {label}: {where}.{what}: no such file {str(p)!r}",
                    field=f"{where}.{what}",
                    value=str(p),
                )

    tls_files = [n for n in ("mqtt_ca", "mqtt_cert", "mqtt_key") if getattr(att, n) is not None]
    if tls_files and not att.broker.startswith("mqtts://"):
        raise ConfigError(
            f"attach file {label}: {tls_files[0]}: TLS files need an mqtts:// broker, got "
            f"{att.broker!r}",
            field=tls_files[0],
        )
    if (att.mqtt_cert is None) != (att.mqtt_key is None):
        name = "mqtt_cert" if att.mqtt_key is None else "mqtt_key"
        raise ConfigError(
            f"attach file {label}: {name}: mqtt_cert and mqtt_key go together (a client "
            "certificate and its key)",
            field=name,
        )
    for name in tls_files:
        p = getattr(att, name)
        if not p.is_absolute():
            p = (base / p).resolve()
            setattr(att, name, p)
        if not p.is_file():
            raise ConfigError(
                f"attach file {label}: {name}: no such file {str(p)!r}", field=name, value=str(p)
            )
    for node, kme in att.kmes.items():
        if node not in topo.graph:
            raise UnknownNameError(
                f"attach file {label}: kmes.{node}: not a node of the topology",
                field=f"kmes.{node}",
                value=node,
            )
        resolve_files(kme, f"kmes.{node}", ("cert", "key", "ca"))
    for i, pair in enumerate(att.sae_status):
        if pair.kme not in att.kmes:
            raise UnknownNameError(
                f"attach file {label}: sae_status.{i}.kme: {pair.kme!r} is not under kmes",
                field=f"sae_status.{i}.kme",
                value=pair.kme,
            )
        resolve_files(pair, f"sae_status.{i}", ("cert", "key", "ca"))
    if att.iot is not None:
        for where, node in [("iot.aggregator", att.iot.aggregator)] + [
            (f"iot.edges.{e}", n) for e, n in att.iot.edges.items()
        ]:
            if node not in topo.graph:
                raise UnknownNameError(
                    f"attach file {label}: {where}: {node!r} is not a node of the topology",
                    field=where,
                    value=node,
                )
    if att.aggregator is not None:
        if att.aggregator.kme not in att.kmes:
            raise UnknownNameError(
                f"attach file {label}: aggregator.kme: {att.aggregator.kme!r} is not under kmes",
                field="aggregator.kme",
                value=att.aggregator.kme,
            )
        resolve_files(att.aggregator, "aggregator", ("cert", "key", "ca", "kem_seed_file"))
    if att.iot_topic_style == "sparkplug":
        from qkdtwin.iot.sparkplug import INSTALL_HINT

        try:
            import google.protobuf  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"attach file {label}: iot_topic_style: sparkplug needs the protobuf runtime: "
                f"{INSTALL_HINT}",
                field="iot_topic_style",
                value="sparkplug",
            ) from None
    if len(set(att.module_map())) != len(att.links):
        raise ConfigError(f"attach file {label}: links: module ids must be unique", field="links")
    return att
