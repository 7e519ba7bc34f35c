"""The closed loop end to end: plant (Mosquitto, real KMEs), attached twin with --actuate on."""

from __future__ import annotations

import time

import pytest

from qkdtwin.kms.client import KmeClient
from qkdtwin.plant import Plant
from qkdtwin.twin.attached_runner import AttachedRunner

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e

MOSQUITTO = "mqtt://127.0.0.1:1883"


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture
def attached(tmp_path):
    plant = Plant("examples/plant-seed.yaml", tmp_path / "plant", broker=MOSQUITTO,
                  speed=10.0).start()  # fmt: skip
    runner = AttachedRunner(plant.attach_file, serve=False, actuate="on").start()
    yield plant, runner
    runner.stop()
    plant.stop()


def test_an_attack_stops_the_links_key_delivery_at_both_kmes(attached):
    plant, runner = attached
    twin = runner.twin
    _wait(
        lambda: all(lk.estimate.converged and lk.estimate.intervals >= 30
                    for lk in twin.state().links),
        60, "calibration",
    )  # fmt: skip
    stores = [plant.net.stores["M1"]["M2"], plant.net.stores["M2"]["M1"]]
    plant.attack("M1-M2", "fiber-tap", 0.5)
    _wait(lambda: any(a.link == "M1-M2" for a in twin.alarms), 60, "an alarm on M1-M2")
    alarm = next(a for a in twin.alarms if a.link == "M1-M2")

    def acted() -> list:
        return [e for e in alarm.events if e.what == "actuated"]

    others = set(twin.attach.kmes) - {"M1", "M2"}
    # the gateways whose keys reach the aggregator (M1) over M1-M2: those behind M2
    crossing = {"GW2.1", "GW2.2"}
    _wait(lambda: len(acted()) >= 4 + len(others) + len(crossing), 10, "the actions")
    acts = {(e.detail["action"], e.detail["kme"]): e.detail for e in acted()}
    quotas = {k: d for k, d in acts.items() if k[0] == "quota"}
    assert set(acts) - set(quotas) == {
        (k, n) for k in ("disable", "discard") for n in ("M1", "M2")
    } | {("avoid", n) for n in others} | {("rekey", e) for e in crossing}
    assert all(d["error"] is None for d in acts.values()), acts
    # relay quotas (static policy) at the gateways' KMEs whose relays now take a detour,
    # toward the aggregator's KME, read back from those KMEs
    assert quotas, "no relay quota set"
    for (_, node), d in quotas.items():
        assert d["peer"] == twin.attach.iot.aggregator
        assert d["keys_per_s"] > 0
        assert d["effect"] == {"keys_per_s": d["keys_per_s"]}
        state = plant.net.nodes[node].relay_quotas[d["peer"]].state()
        assert state.keys_per_s == d["keys_per_s"]
    # delivery stopped at both KMEs, read back, within 2 s of the alarm
    for n in ("M1", "M2"):
        d = acts[("disable", n)]
        assert d["effect"] == {"enabled": False}
        assert d["effect_at"] - d["planned_at"] < 2.0, d
    truth = {lk.id: lk for lk in plant.truth().links}
    assert truth["M1-M2"].kme_enabled is False
    ack = max(acts[("discard", n)]["acked_at"] for n in ("M1", "M2"))
    since = acts[("discard", "M1")]["since"]
    # the keys stored between the change point and the discard are gone at both ends
    for st in stores:
        with st.engine.connect() as conn:
            left = conn.exec_driver_sql(
                "SELECT count(*) FROM kms_keys WHERE state = 'available' "
                "AND created_at >= ? AND created_at <= ?",
                (since, ack - 0.5),
            ).scalar_one()
        assert left == 0
    # an SAE whose keys relayed over M1-M2 still gets keys, over the other path, and
    # nothing is delivered or relayed from the disabled link
    before = [st.counters().delivered_total for st in stores]
    cert, key = plant.net.pki.saes["sae-GW2.1"]
    with KmeClient(plant.net.url("GW2.1"), cert, key, plant.net.pki.ca_cert) as sae:
        assert len(sae.get_keys("sae-scada", number=2)) == 2
    time.sleep(1.0)
    assert [st.counters().delivered_total for st in stores] == before
    assert alarm.exposed_keys is not None
    # the gateways behind M2 were asked to rekey, and did; the others were not asked
    by_edge = {sess.config.edge_id: sess for sess in plant.sessions}
    _wait(lambda: all(by_edge[e].gateway.rekey_requests >= 1 for e in crossing), 10, "rekeys")
    assert all(s.gateway.rekey_requests == 0 for e, s in by_edge.items() if e not in crossing)
