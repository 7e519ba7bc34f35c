"""ETSI 014 JSON objects round-trip through their models (a Hypothesis property)."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from qkdtwin.kms.api import KeyContainer, KeyIDs, KeyRequest

ids = st.uuids().map(str)
ext = st.none() | st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), max_size=2)


@given(
    st.lists(st.tuples(ids, st.binary(min_size=1, max_size=64), ext), max_size=5),
    ext,
)
def test_key_container_round_trip(
    entries: list[tuple[str, bytes, dict[str, int] | None]], cext: dict[str, int] | None
) -> None:
    doc = {
        "keys": [
            {
                "key_ID": kid,
                "key_ID_extension": e,
                "key": base64.b64encode(m).decode(),
                "key_extension": None,
            }
            for kid, m, e in entries
        ],
        "key_container_extension": cext,
    }
    assert KeyContainer.model_validate(doc).model_dump() == doc


@given(st.lists(ids, max_size=5), ext)
def test_key_ids_round_trip(key_ids: list[str], e: dict[str, int] | None) -> None:
    doc = {
        "key_IDs": [{"key_ID": k, "key_ID_extension": None} for k in key_ids],
        "key_IDs_extension": e,
    }
    assert (
        KeyIDs.model_validate_json(KeyIDs.model_validate(doc).model_dump_json()).model_dump() == doc
    )


@given(
    st.none() | st.integers(-5, 500),
    st.none() | st.integers(-8, 4096),
    st.none() | st.lists(st.text(min_size=1, max_size=8), max_size=3),
)
def test_key_request_round_trip(
    number: int | None, size: int | None, extra: list[str] | None
) -> None:
    doc = {
        "number": number,
        "size": size,
        "additional_slave_SAE_IDs": extra,
        "extension_mandatory": None,
        "extension_optional": None,
    }
    assert KeyRequest.model_validate(doc).model_dump() == doc


def test_the_status_map_round_trips_every_kms_error() -> None:
    """Server and client sides read one map: each error class gives its ETSI status, that
    status gives the class back, and a subclass takes its base's status."""
    from qkdtwin.errors import KeyAccessError, KeyExhaustedError, KmsError, KmsRequestError
    from qkdtwin.kms.etsi_errors import error_class, etsi_status

    for cls, status in ((KmsRequestError, 400), (KeyAccessError, 401), (KeyExhaustedError, 503)):
        assert etsi_status(cls("x"), 500) == status
        assert error_class(status, KmsError) is cls

    class NarrowerError(KeyExhaustedError):
        pass

    assert etsi_status(NarrowerError("x"), 500) == 503
    assert etsi_status(KmsError("x"), 418) == 418
    assert error_class(502, KmsError) is KmsError
