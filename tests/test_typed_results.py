"""The typed results describe what the code returns: each TypedDict's keys are checked against
a real result (or against the model it mirrors), so a field added to one side and not the
other fails here instead of drifting silently (mypy cannot see a key that is set dynamically,
and a TypedDict mirroring a pydantic model or a dataclass is the same list written twice)."""

from __future__ import annotations

import dataclasses
from typing import Any, NotRequired, get_origin, get_type_hints

import numpy as np
import pytest


def _keys(td: Any) -> tuple[set[str], set[str]]:
    """(required, all) keys of a TypedDict.

    Read from the resolved annotations: with ``from __future__ import annotations`` Python
    3.11's ``__required_keys__`` counts a ``NotRequired`` key as required.
    """
    hints = get_type_hints(td, include_extras=True)
    optional = {k for k, h in hints.items() if get_origin(h) is NotRequired}
    optional |= set(td.__optional_keys__)
    return set(hints) - optional, set(hints)


def _matches(obj: dict[str, Any], td: Any) -> None:
    required, every = _keys(td)
    assert required <= set(obj) <= every, (sorted(set(obj) ^ every), td.__name__)


def test_the_etsi_status_dict_mirrors_the_servers_model() -> None:
    from qkdtwin.kms.api import Status
    from qkdtwin.kms.client import EtsiStatus

    _, every = _keys(EtsiStatus)
    assert every == set(Status.model_fields)


def test_the_interval_report_dict_mirrors_the_report() -> None:
    from qkdtwin.iot.session import IntervalReport, IntervalReportDict

    fields = {f.name for f in dataclasses.fields(IntervalReport)}
    _, every = _keys(IntervalReportDict)
    # latest (the readings themselves) is summarised as devices_seen
    assert every == (fields - {"latest"}) | {"devices_seen"}


def test_the_alarm_record_mirrors_the_alarm() -> None:
    # Alarm.to_dict is asdict() cast to AlarmRecord: mypy does not check the keys
    from qkdtwin.twin.alarms import Alarm, AlarmRecord

    _, every = _keys(AlarmRecord)
    assert every == {f.name for f in dataclasses.fields(Alarm)}


def test_the_relay_quota_dict_mirrors_the_kmes_quota() -> None:
    from qkdtwin.kms.client import RelayQuotaInfo
    from qkdtwin.kms.operator import RelayQuotaView
    from qkdtwin.kms.quota import QuotaState

    _, every = _keys(RelayQuotaInfo)
    assert every == {f.name for f in dataclasses.fields(QuotaState)}
    assert every == set(RelayQuotaView.model_fields)


def test_the_twins_kme_link_view_has_every_store_count() -> None:
    # the twin reads the KME's link counts off the wire (KmeLinkView is its API model)
    from qkdtwin.kms.store_types import KeyCounts
    from qkdtwin.twin.models import KmeLinkView

    assert {f.name for f in dataclasses.fields(KeyCounts)} <= set(KmeLinkView.model_fields)


def test_link_and_network_results_have_their_declared_keys() -> None:
    from qkdtwin.network import seed_topology, simulate, uniform_demands
    from qkdtwin.network.engine import SimulationResultDict
    from qkdtwin.network.pools import PoolStatsDict
    from qkdtwin.qkd import build_link_model, simulate_link
    from qkdtwin.qkd.link import LinkResultDict

    res = simulate_link(
        "decoy-bb84", build_link_model("decoy-bb84", 10.0), 20_000, np.random.default_rng(0)
    )
    _matches(dict(res.to_dict()), LinkResultDict)
    topo = seed_topology()
    sim = simulate(
        topo,
        uniform_demands(topo, 1.0),
        pool_capacity=100,
        keys_per_service=10,
        policy="static",
        rng=np.random.default_rng(0),
        services=200,
    )
    _matches(dict(sim.to_dict()), SimulationResultDict)
    _matches(dict(sim.pools[0].to_dict()), PoolStatsDict)


@pytest.mark.parametrize("name", ["LinkResultDict", "SimulationResultDict"])
def test_a_key_missing_from_the_result_is_caught(name: str) -> None:
    """The check above can fail: a result without one declared key does not match."""
    from qkdtwin.network.engine import SimulationResultDict
    from qkdtwin.qkd.link import LinkResultDict

    td = {"LinkResultDict": LinkResultDict, "SimulationResultDict": SimulationResultDict}[name]
    required, _ = _keys(td)
    fake = dict.fromkeys(required - {sorted(required)[0]})
    with pytest.raises(AssertionError):
        _matches(fake, td)
