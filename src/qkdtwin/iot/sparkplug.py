"""Sparkplug B 3.0 topics, payload codec and sequence numbers (the optional ``sparkplug`` mode).

Topics (Sparkplug B 3.0, section 4.1)::

    spBv1.0/{group_id}/{NBIRTH|NDEATH|NDATA|NCMD}/{edge_node_id}
    spBv1.0/{group_id}/{DBIRTH|DDEATH|DDATA|DCMD}/{edge_node_id}/{device_id}

Payloads are Sparkplug B protobuf messages. The message classes are built here, at first use,
from the field numbers of the Sparkplug 3.0 specification (the ``Payload``, ``Metric``,
``PropertySet`` and ``PropertyValue`` messages, proto2 syntax), in a private descriptor pool of
the ``protobuf`` runtime: no generated code, and no clash with another Sparkplug library that
registers Eclipse Tahu's schema in the default pool. Fields this mode never writes (data sets,
templates, metadata, extensions) are left out of the schema; a decoder skips them as unknown
fields, as protobuf does for any field it does not know.

The ``protobuf`` runtime is an optional dependency (``pip install 'qkdtwin[sparkplug]'``);
:func:`require_protobuf` says so in one line when it is missing.

Sequence numbers: ``seq`` is 0 in NBIRTH and grows by one, modulo 256, on every later message
of the edge node (DBIRTH, NDATA, DDATA, DDEATH); NDEATH carries none. ``bdSeq`` (a ``UInt64``
metric of NBIRTH and NDEATH) ties a birth to the death registered as the MQTT will.
"""

from __future__ import annotations

import enum
import functools
import time
from dataclasses import dataclass, field
from typing import Any

from qkdtwin.errors import ConfigError, MalformedEnvelopeError

__all__ = [
    "BDSEQ_METRIC",
    "ENVELOPE_METRIC",
    "INSTALL_HINT",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "REKEY_METRIC",
    "SEQ_MODULUS",
    "DataType",
    "Metric",
    "Payload",
    "SparkplugTopic",
    "decode_payload",
    "encode_payload",
    "next_seq",
    "now_ms",
    "parse_topic",
    "require_protobuf",
    "seq_missing",
    "sparkplug_topic",
]

NAMESPACE = "spBv1.0"
#: Sequence numbers run 0..255 and wrap.
SEQ_MODULUS = 256
#: Birth/death sequence metric of NBIRTH and NDEATH (``UInt64``).
BDSEQ_METRIC = "bdSeq"
#: The NCMD metric a host writes ``true`` to ask for NBIRTH and every DBIRTH again.
REBIRTH_METRIC = "Node Control/Rebirth"
#: The ``Bytes`` metric of NDATA and DDATA: one or more sealed envelope records back to back.
ENVELOPE_METRIC = "qkdtwin/envelope"
#: The NCMD metric that starts a new key epoch at the gateway (the twin's closed loop).
REKEY_METRIC = "qkdtwin/rekey"
INSTALL_HINT = "pip install 'qkdtwin[sparkplug]'"

_NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
_DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})


class DataType(enum.IntEnum):
    """Sparkplug B 3.0 metric and property data types (section 6.4.16)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21


# Which oneof field of Metric / PropertyValue holds a value of each type (spec 6.4.x).
_VALUE_FIELD = {
    DataType.INT8: "int_value",
    DataType.INT16: "int_value",
    DataType.INT32: "int_value",
    DataType.UINT8: "int_value",
    DataType.UINT16: "int_value",
    DataType.UINT32: "int_value",
    DataType.INT64: "long_value",
    DataType.UINT64: "long_value",
    DataType.DATETIME: "long_value",
    DataType.FLOAT: "float_value",
    DataType.DOUBLE: "double_value",
    DataType.BOOLEAN: "boolean_value",
    DataType.STRING: "string_value",
    DataType.TEXT: "string_value",
    DataType.UUID: "string_value",
    DataType.BYTES: "bytes_value",
    DataType.FILE: "bytes_value",
}
_SIGNED_BITS: dict[int, int] = {
    DataType.INT8: 8,
    DataType.INT16: 16,
    DataType.INT32: 32,
    DataType.INT64: 64,
}
_KNOWN_TYPES = frozenset(int(t) for t in DataType)
_PROPERTY_TYPES: dict[type, DataType] = {
    bool: DataType.BOOLEAN,
    int: DataType.INT64,
    float: DataType.DOUBLE,
    str: DataType.STRING,
}


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """A parsed Sparkplug topic (``device`` is ``None`` for edge-node messages)."""

    group: str
    message_type: str
    edge: str
    device: str | None = None


def sparkplug_topic(group: str, message_type: str, edge: str, device: str | None = None) -> str:
    """Return ``spBv1.0/{group}/{message_type}/{edge}[/{device}]``."""
    base = f"{NAMESPACE}/{group}/{message_type}/{edge}"
    return base if device is None else f"{base}/{device}"


def parse_topic(topic: str) -> SparkplugTopic | None:
    """Parse a Sparkplug B topic; ``None`` for anything else (STATE, other namespaces...)."""
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or not all(parts[1:]):
        return None
    msg_type = parts[2]
    if len(parts) == 4 and msg_type in _NODE_TYPES:
        return SparkplugTopic(parts[1], msg_type, parts[3])
    if len(parts) == 5 and msg_type in _DEVICE_TYPES:
        return SparkplugTopic(parts[1], msg_type, parts[3], parts[4])
    return None


def next_seq(seq: int) -> int:
    """Return the sequence number after ``seq``: 255 is followed by 0."""
    return (seq + 1) % SEQ_MODULUS


def seq_missing(last: int, seq: int) -> int:
    """Messages missing between ``last`` and ``seq`` (0: consecutive; 255: ``seq == last``)."""
    return (seq - last - 1) % SEQ_MODULUS


def now_ms() -> int:
    """Wall-clock time in ms since the Unix epoch (Sparkplug timestamps)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Metric:
    """One Sparkplug metric.

    Attributes
    ----------
    name
        The metric's name (``None`` when a data message uses aliases; this mode never does).
    datatype
        Its :class:`DataType`.
    value
        ``int``, ``float``, ``bool``, ``str`` or ``bytes``; ``None`` with ``is_null``.
    timestamp
        ms since the Unix epoch, or ``None``.
    is_null
        Explicitly no value (births declare the sealed readings this way).
    properties
        Sparkplug properties, e.g. ``{"engUnit": "mm/s"}``; ``str``, ``int``, ``float`` or
        ``bool`` values.
    """

    name: str | None
    datatype: DataType
    value: Any = None
    timestamp: int | None = None
    is_null: bool = False
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Payload:
    """A Sparkplug B payload: ``timestamp`` (ms since the epoch), ``seq`` (0..255 or ``None``)."""

    timestamp: int | None
    seq: int | None
    metrics: tuple[Metric, ...] = ()

    def metric(self, name: str) -> Metric | None:
        """Return the first metric called ``name``, or ``None``."""
        for m in self.metrics:
            if m.name == name:
                return m
        return None


def require_protobuf() -> None:
    """Check that the protobuf runtime can be imported.

    Raises
    ------
    ConfigError
        Naming the ``sparkplug`` extra, when it cannot.
    """
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"the Sparkplug B mode needs the protobuf runtime: {INSTALL_HINT}",
            field="topic_style",
            value="sparkplug",
        ) from None


@functools.cache
def _schema() -> tuple[Any, Any, Any]:
    """Build ``(Payload, Metric, PropertyValue)`` message classes from the spec's numbers."""
    require_protobuf()
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FieldDescriptorProto
    pkg = "qkdtwin.sparkplug.b"
    opt = fdp.LABEL_OPTIONAL

    def add(msg: Any, name: str, number: int, ftype: int, *, label: int = opt,
            type_name: str | None = None, oneof: int | None = None) -> None:  # fmt: skip
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name is not None:
            f.type_name = f".{pkg}.{type_name}"
        if oneof is not None:
            f.oneof_index = oneof

    file = descriptor_pb2.FileDescriptorProto(
        name="qkdtwin/sparkplug_b_3_0.proto", package=pkg, syntax="proto2"
    )
    payload = file.message_type.add(name="Payload")
    add(payload, "timestamp", 1, fdp.TYPE_UINT64)
    add(payload, "metrics", 2, fdp.TYPE_MESSAGE, label=fdp.LABEL_REPEATED,
        type_name="Payload.Metric")  # fmt: skip
    add(payload, "seq", 3, fdp.TYPE_UINT64)
    add(payload, "uuid", 4, fdp.TYPE_STRING)
    add(payload, "body", 5, fdp.TYPE_BYTES)

    prop_value = payload.nested_type.add(name="PropertyValue")
    add(prop_value, "type", 1, fdp.TYPE_UINT32)
    add(prop_value, "is_null", 2, fdp.TYPE_BOOL)
    prop_value.oneof_decl.add(name="value")
    for name, number, ftype in (
        ("int_value", 3, fdp.TYPE_UINT32),
        ("long_value", 4, fdp.TYPE_UINT64),
        ("float_value", 5, fdp.TYPE_FLOAT),
        ("double_value", 6, fdp.TYPE_DOUBLE),
        ("boolean_value", 7, fdp.TYPE_BOOL),
        ("string_value", 8, fdp.TYPE_STRING),
    ):
        add(prop_value, name, number, ftype, oneof=0)

    prop_set = payload.nested_type.add(name="PropertySet")
    add(prop_set, "keys", 1, fdp.TYPE_STRING, label=fdp.LABEL_REPEATED)
    add(prop_set, "values", 2, fdp.TYPE_MESSAGE, label=fdp.LABEL_REPEATED,
        type_name="Payload.PropertyValue")  # fmt: skip

    metric = payload.nested_type.add(name="Metric")
    add(metric, "name", 1, fdp.TYPE_STRING)
    add(metric, "alias", 2, fdp.TYPE_UINT64)
    add(metric, "timestamp", 3, fdp.TYPE_UINT64)
    add(metric, "datatype", 4, fdp.TYPE_UINT32)
    add(metric, "is_historical", 5, fdp.TYPE_BOOL)
    add(metric, "is_transient", 6, fdp.TYPE_BOOL)
    add(metric, "is_null", 7, fdp.TYPE_BOOL)
    add(metric, "properties", 9, fdp.TYPE_MESSAGE, type_name="Payload.PropertySet")
    metric.oneof_decl.add(name="value")
    for name, number, ftype in (
        ("int_value", 10, fdp.TYPE_UINT32),
        ("long_value", 11, fdp.TYPE_UINT64),
        ("float_value", 12, fdp.TYPE_FLOAT),
        ("double_value", 13, fdp.TYPE_DOUBLE),
        ("boolean_value", 14, fdp.TYPE_BOOL),
        ("string_value", 15, fdp.TYPE_STRING),
        ("bytes_value", 16, fdp.TYPE_BYTES),
    ):
        add(metric, name, number, ftype, oneof=0)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    classes = tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{pkg}.{name}"))
        for name in ("Payload", "Payload.Metric", "Payload.PropertyValue")
    )
    return classes[0], classes[1], classes[2]


def _to_wire(datatype: DataType, value: Any) -> tuple[str, Any]:
    fname = _VALUE_FIELD.get(datatype)
    if fname is None:
        raise ConfigError(f"no scalar value field for datatype {datatype.name}", field="datatype")
    bits = _SIGNED_BITS.get(datatype)
    if bits is not None and value < 0:
        # A negative integer travels as its two's complement in its own width (Int8 -1: 255)
        value += 1 << bits
    return fname, value


def _from_wire(datatype: int, fname: str | None, raw: Any) -> Any:
    if fname is None:
        return None
    bits = _SIGNED_BITS.get(datatype)
    if bits is not None and raw >= 1 << (bits - 1):
        # two's complement in the type's width, or sign-extended to the field's (some
        # implementations write an Int8 -1 as 2**32 - 1)
        return raw - (1 << (bits if raw < 1 << bits else (32 if fname == "int_value" else 64)))
    return raw


def encode_payload(payload: Payload) -> bytes:
    """Serialise ``payload`` to Sparkplug B protobuf bytes.

    Raises
    ------
    ConfigError
        Without the protobuf runtime, or for a metric whose datatype has no scalar value field.
    """
    payload_cls, _metric_cls, _prop_cls = _schema()
    msg = payload_cls()
    if payload.timestamp is not None:
        msg.timestamp = payload.timestamp
    if payload.seq is not None:
        msg.seq = payload.seq
    for m in payload.metrics:
        pm = msg.metrics.add()
        if m.name is not None:
            pm.name = m.name
        if m.timestamp is not None:
            pm.timestamp = m.timestamp
        pm.datatype = int(m.datatype)
        if m.is_null or m.value is None:
            pm.is_null = True
        else:
            fname, value = _to_wire(m.datatype, m.value)
            setattr(pm, fname, value)
        if m.properties:
            for key, value in m.properties.items():
                ptype = _PROPERTY_TYPES[type(value)]
                pm.properties.keys.append(key)
                pv = pm.properties.values.add()
                pv.type = int(ptype)
                fname, wire = _to_wire(ptype, value)
                setattr(pv, fname, wire)
    return bytes(msg.SerializeToString())


def decode_payload(data: bytes) -> Payload:
    """Parse Sparkplug B protobuf bytes.

    Raises
    ------
    MalformedEnvelopeError
        With reason ``"bad_sparkplug"`` if the bytes are not a Sparkplug B payload.
    ConfigError
        Without the protobuf runtime.
    """
    payload_cls, _metric_cls, _prop_cls = _schema()
    from google.protobuf.message import DecodeError

    try:
        msg = payload_cls.FromString(bytes(data))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise MalformedEnvelopeError("not a Sparkplug B payload", reason="bad_sparkplug") from exc
    metrics = []
    for pm in msg.metrics:
        props: dict[str, Any] = {}
        if pm.HasField("properties"):
            for key, pv in zip(pm.properties.keys, pm.properties.values, strict=False):
                props[key] = None if pv.is_null else _from_wire(pv.type, pv.WhichOneof("value"),
                                                                 _oneof(pv))  # fmt: skip
        dtype = pm.datatype if pm.datatype in _KNOWN_TYPES else 0
        fname = pm.WhichOneof("value")
        metrics.append(
            Metric(
                name=pm.name if pm.HasField("name") else None,
                datatype=DataType(dtype),
                value=_from_wire(dtype, fname, _oneof(pm)),
                timestamp=pm.timestamp if pm.HasField("timestamp") else None,
                is_null=pm.is_null,
                properties=props,
            )
        )
    return Payload(
        timestamp=msg.timestamp if msg.HasField("timestamp") else None,
        seq=msg.seq if msg.HasField("seq") else None,
        metrics=tuple(metrics),
    )


def _oneof(msg: Any) -> Any:
    fname = msg.WhichOneof("value")
    return None if fname is None else getattr(msg, fname)
