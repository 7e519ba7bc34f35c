"""The plant: scenario validation, modules under events, control endpoint, attach file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.interfaces import parse_link_telemetry
from qkdtwin.plant import Plant, create_control_app, interval_law, load_plant_scenario
from qkdtwin.plant.scenario import DriftSpec
from tests.asgi_client import AsgiClient

SEED = "examples/plant-seed.yaml"


def offline(tmp_path, scenario=SEED, **kw) -> Plant:
    sink: list[tuple[str, bytes]] = []
    p = Plant(
        scenario,
        tmp_path,
        broker=None,
        kmes=False,
        iot=False,
        publish=lambda t, b: sink.append((t, b)),
        **kw,
    )
    p.sink = sink  # type: ignore[attr-defined]
    return p


def test_seed_example_has_every_link_with_role_defaults(tmp_path):
    sc = load_plant_scenario(SEED)
    assert len(sc.link_ids) == 12
    assert sc.link_truth("M1-M2")["length_km"] == 40.0  # per-link override
    assert sc.link_truth("GW1.1-OLT1")["length_km"] == 5.0  # access link by role
    assert sc.link_truth("M1-OLT1")["length_km"] == 15.0  # OLT uplink by role
    assert sc.link_truth("M2-M3")["detector_efficiency"] == 0.05


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"plant": {"links": {"M1-M9": {"length_km": 3}}}}, "plant.links"),
        ({"plant": {"drift": [{"link": "M1-M2", "kind": "wobble"}]}}, "plant.drift.0.kind"),
        (
            {"plant": {"events": [{"at_s": 1, "action": "attack", "link": "M1-M2"}]}},
            "plant.events.0",
        ),
        (
            {
                "plant": {
                    "events": [{"at_s": 1, "action": "attack", "link": "M1-M2", "type": "teleport"}]
                }
            },
            "plant.events.0",
        ),
        ({"plant": {"reporting_interval_s": 0}}, "plant.reporting_interval_s"),
        ({"plant": {"aggregator": "nowhere"}}, "plant.aggregator"),
        ({"plant": {"surprise": 1}}, "plant.surprise"),
    ],
)
def test_bad_scenarios_name_the_field(patch, field):
    import yaml

    base = yaml.safe_load(Path(SEED).read_text())
    base["plant"].update(patch["plant"])
    with pytest.raises(ConfigError) as err:
        load_plant_scenario(base)
    assert (err.value.field or "").startswith(field)


def test_drift_offsets():
    assert DriftSpec(link="x", kind="ramp", db_per_hour=0.36).offset_db(1800) == pytest.approx(0.18)
    s = DriftSpec(link="x", kind="sine", amplitude_db=0.2, period_s=100.0)
    assert s.offset_db(25.0) == pytest.approx(0.2)
    assert DriftSpec(link="x", kind="step", at_s=10, db=0.5).offset_db(9.9) == 0.0
    assert DriftSpec(link="x", kind="step", at_s=10, db=0.5).offset_db(10.0) == 0.5


def test_messages_are_valid_telemetry_with_increasing_seq(tmp_path):
    p = offline(tmp_path)
    for _ in range(3):
        p.step()
    by_module: dict[str, list[int]] = {}
    for topic, raw in p.sink:
        msg = parse_link_telemetry(raw)
        assert topic == f"qkdtwin/link/v1/{msg.module_id}/perf"
        by_module.setdefault(msg.module_id, []).append(msg.seq)
        assert msg.interval_end - msg.interval_start == pytest.approx(1.0)
        # telemetry carries measurements only: no true parameter leaks into it
        assert "loss" not in raw.decode()
        assert "efficiency" not in raw.decode()
    assert len(by_module) == 12
    assert all(seqs == [0, 1, 2] for seqs in by_module.values())


def test_same_seed_same_messages(tmp_path):
    a, b = offline(tmp_path / "a"), offline(tmp_path / "b")
    b.clock_epoch = a.clock_epoch
    for _ in range(3):
        assert [m.model_dump() for m in a.step()] == [m.model_dump() for m in b.step()]


def test_counts_follow_the_hidden_law_and_events(tmp_path):
    p = offline(tmp_path)
    m = p.module("M2-M1")
    law = interval_law(m.params_at(0.0))
    n = 40
    det = np.zeros(3)
    sent = np.zeros(3)
    for _ in range(n):
        msg = next(x for x in p.step() if x.link_id == "M1-M2")
        det += [c.detected for c in msg.intensities]
        sent += [c.sent for c in msg.intensities]
    z = (det - sent * law.p_click) / np.sqrt(sent * law.p_click * (1 - law.p_click))
    assert np.all(np.abs(z) < 4.5)
    # a fiber tap of 0.5 removes half the power: the signal gain roughly halves
    p.attack("M1-M2", "fiber-tap", 0.5)
    assert p.truth().links[
        [lk.id for lk in p.truth().links].index("M1-M2")
    ].loss_db == pytest.approx(m.params.channel_loss_db + 10 * math.log10(2))
    det_tap = sum(
        next(x for x in p.step() if x.link_id == "M1-M2").intensities[0].detected for _ in range(n)
    )
    assert det_tap / det[0] == pytest.approx(0.5, rel=0.1)
    p.clear("M1-M2")
    p.cut("M1-M2")
    cut = next(x for x in p.step() if x.link_id == "M1-M2")
    assert cut.intensities[0].detected < 10  # dark counts only
    assert p.truth().links[[lk.id for lk in p.truth().links].index("M1-M2")].loss_db is None


def test_scripted_events_and_drift(tmp_path):
    import yaml

    sc = yaml.safe_load(Path(SEED).read_text())
    sc["plant"]["events"] = [
        {
            "at_s": 2,
            "action": "attack",
            "link": "M1-M2",
            "type": "intercept-resend",
            "fraction": 1.0,
        },
        {"at_s": 4, "action": "drift", "link": "M1-M2", "loss_db": 1.0},
    ]
    p = offline(tmp_path, sc)
    for _ in range(6):
        p.step()
    truth = {lk.id: lk for lk in p.truth().links}
    assert truth["M1-M2"].attack == {"type": "intercept-resend", "fraction": 1.0}
    assert truth["M1-M2"].loss_db == pytest.approx(40 * 0.21 + 1.0)
    with pytest.raises(ConfigError, match="negative"):
        p.drift("M1-M2", -5.0)


def test_control_endpoint(tmp_path):
    p = offline(tmp_path)
    c = AsgiClient(create_control_app(p))
    r = c.post("/links/M2-M1/attack", json={"type": "pns", "fraction": 0.1})
    assert r.status_code == 200
    assert r.json()["attack"] == {"type": "pns", "fraction": 0.1}
    assert c.post("/links/M1-M2/drift", json={"loss_db": 0.5}).json()["loss_db"] == pytest.approx(
        8.9
    )
    assert c.post("/links/M1-M2/clear").json()["attack"] is None
    assert c.post("/links/M1-M9/cut").status_code == 400
    assert c.post("/links/M1-M9/cut").json()["field"] == "link"
    bad = c.post("/links/M1-M2/attack", json={"type": "laser", "fraction": 0.5})
    assert bad.status_code == 400
    assert bad.json()["field"] == "type"
    assert c.post("/links/M1-M2/attack", json={"type": "pns", "fraction": 1.5}).status_code == 422
    truth = c.get("/truth").json()
    assert {"id", "loss_db", "attack"} <= set(truth["links"][0])


def test_unknown_link_and_speed():
    with pytest.raises(ConfigError, match="speed"):
        Plant(SEED, "/tmp/x", broker=None, kmes=False, iot=False, speed=0)
    p = Plant(SEED, "/tmp/x", broker=None, kmes=False, iot=False)
    with pytest.raises(UnknownNameError):
        p.attack("A-B", "pns")
