from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from qkdtwin.errors import ConfigError, UnknownNameError
from qkdtwin.network import Demand, seed_topology, simulate, uniform_demands
from qkdtwin.twin import KeyNetwork, Twin, load_twin_scenario, parse_sets, windowed_qber
from qkdtwin.twin.links import Block

from .conftest import seed_dict


def ref_window_qber(blocks: list[Block], min_bits: int) -> float:
    """Independent reference: pool the newest blocks until min_bits sifted bits."""
    sifted = errors = 0
    for b in blocks[::-1]:
        sifted += b.sifted
        errors += b.errors
        if sifted >= min_bits:
            break
    return errors / sifted


def check_alarm_rule(twin: Twin, before: dict[str, str], n_alarms: int) -> None:
    """Alarm raised on a link exactly when it was up and its windowed QBER > threshold."""
    new = {a.link for a in twin.alarms.alarms[n_alarms:]}
    for lid, lk in twin.links.items():
        q = ref_window_qber(list(lk.blocks), lk.min_bits)
        crossed = before[lid] == "up" and q > lk.qber_threshold
        assert (lid in new) == crossed, (lid, q, before[lid])
        if crossed:
            assert twin.status[lid] == "alarm"
            assert twin.alarms.active_for(lid).qber == pytest.approx(q)


def test_windowed_qber_matches_reference() -> None:
    rng = np.random.default_rng(3)
    blocks = [
        Block(float(i), 1000, int(s), int(e), 0.0)
        for i, (s, e) in enumerate(
            zip(rng.integers(1, 900, 40), rng.integers(0, 50, 40), strict=False)
        )
    ]
    for min_bits in (1, 500, 1000, 5000, 10**6):
        assert windowed_qber(blocks, min_bits) == pytest.approx(ref_window_qber(blocks, min_bits))


def test_alarm_raised_exactly_when_qber_crosses_threshold(make_twin) -> None:
    twin = make_twin()
    for _ in range(3):
        before, n = dict(twin.status), len(twin.alarms.alarms)
        twin.step()
        check_alarm_rule(twin, before, n)
    assert not twin.alarms.alarms  # no false alarm on a quiet network
    # a weak attack near the threshold and a full one; every tick obeys the rule
    for link, frac in (("M1-M3", 0.25), ("M1-M2", 1.0)):
        before, n = dict(twin.status), len(twin.alarms.alarms)
        twin.attack(link, "intercept-resend", frac)
        check_alarm_rule(twin, before, n)
    for _ in range(4):
        before, n = dict(twin.status), len(twin.alarms.alarms)
        twin.step()
        check_alarm_rule(twin, before, n)
    assert twin.status["M1-M2"] == "alarm"
    # physics reference: full intercept-resend gives a QBER of about 25 %
    a = twin.alarms.active_for("M1-M2")
    assert 0.20 < a.qber < 0.32


def test_attack_stops_key_and_reroutes_around_link(make_twin) -> None:
    twin = make_twin(seed_dict(kme_feed_every=1))
    twin.step()
    twin.attack("M2-M1", "intercept-resend", 1.0)  # either order
    assert twin.status["M1-M2"] == "alarm"
    keys_before = twin.kmes.links["M1-M2"].available
    produced_before = twin.kmes.links["M1-M2"].produced
    for _ in range(3):
        state = twin.step()
    lk = twin.kmes.links["M1-M2"]
    assert lk.produced == produced_before
    assert lk.available == keys_before
    assert lk.store_a.available_count() == keys_before  # independent count in the store
    view = next(x for x in state["links"] if x["id"] == "M1-M2")
    assert view["status"] == "alarm"
    assert view["key_rate_bps"] == 0.0
    # every pool's path avoids the link and is a shortest path of the graph without it
    g = nx.Graph(twin.topology.graph)
    g.remove_edge("M1", "M2")
    for p in state["pools"]:
        assert p["path"] is not None
        assert ("M1", "M2") not in zip(p["path"], p["path"][1:], strict=False)
        assert ("M2", "M1") not in zip(p["path"], p["path"][1:], strict=False)
        assert len(p["path"]) == nx.shortest_path_length(g, p["src"], p["dst"]) + 1
    alarm = twin.alarms.active_for("M1-M2")
    whats = [e["what"] for e in alarm.events]
    assert whats == ["raised", "key_discarded", "rerouted"]
    rer = alarm.events[2]
    assert sorted(rer["pools_rerouted"]) == [
        "GW1.1|GW2.1",
        "GW1.1|GW2.2",
        "GW1.2|GW2.1",
        "GW1.2|GW2.2",
    ]
    assert alarm.reroute_ms is not None
    assert alarm.reroute_ms >= 0.0
    # clearing restores the link and the direct route
    twin.clear("M1-M2")
    assert twin.status["M1-M2"] == "up"
    assert not alarm.active
    assert [e["what"] for e in alarm.events][-2:] == ["attack_cleared", "restored"]
    st = twin.step()
    pool = next(p for p in st["pools"] if p["id"] == "GW1.1|GW2.1")
    assert pool["path"] == ["GW1.1", "OLT1", "M1", "M2", "OLT2", "GW2.1"]
    assert twin.kmes.links["M1-M2"].produced > produced_before


def test_access_link_alarm_cuts_pools_without_alternative(make_twin) -> None:
    twin = make_twin()
    twin.attack("OLT1-GW1.1", "intercept-resend", 1.0)
    st = twin.state()
    cut = {p["id"] for p in st["pools"] if p["path"] is None}
    assert cut == {f"GW1.1|{o}" for o in ("GW1.2", "GW2.1", "GW2.2", "GW3.1", "GW3.2")}
    assert all(p["rate"] == 0.0 for p in st["pools"] if p["path"] is None)
    wi = twin.what_if()
    assert sorted(wi["unreachable"]) == sorted(cut)


def test_kme_keys_from_alarm_window_are_discarded(make_twin) -> None:
    # a window of many blocks: every key delivered so far lies in the alarm window
    twin = make_twin(seed_dict(kme_feed_every=1, qber_min_bits=10**8))
    for _ in range(3):
        twin.step()
    keys = twin.kmes.links["M1-M3"]
    delivered = [k for blk in keys.delivered for k in blk]
    assert len(delivered) == keys.store_a.available_count() > 0
    twin.links["M1-M3"].qber_threshold = 0.001  # the next check trips the alarm
    twin.step()
    assert twin.status["M1-M3"] == "alarm"
    alarm = twin.alarms.active_for("M1-M3")
    assert alarm.events[1]["blocks"] == 4
    assert alarm.events[1]["kme_keys"] >= len(delivered)
    assert keys.store_a.available_count() == keys.store_b.available_count() == 0
    for k in delivered:
        assert keys.store_a.key_info(k).state == "erased"
        assert keys.store_b.key_info(k).state == "erased"


def test_key_network_accounts_are_exact_for_every_policy() -> None:
    topo = seed_topology(olt_rate=2.0)
    dem = uniform_demands(topo, 1.0)
    for policy in ("static", "proportional", "adaptive-key-residue", "ttd-balance"):
        kn = KeyNetwork(
            topo, dem, pool_capacity=50, keys_per_service=10, policy=policy, horizon_s=1000.0
        )
        rng = np.random.default_rng(4)
        for _ in range(200):
            kn.step(1.0, rng)
            a = kn.costs.dense()
            assert np.all(a @ kn.rates[kn._live] <= kn.costs.capacity + 1e-9)
        lhs = 50 * len(kn.pairs) + kn.generated.sum()
        rhs = kn.consumed.sum() + kn.level.sum() + kn.dropped.sum()
        assert lhs == pytest.approx(rhs)
        assert kn.successes.sum() * 10 == pytest.approx(kn.consumed.sum())


def test_discard_recent_removes_generation_of_pools_over_link() -> None:
    topo = seed_topology(olt_rate=2.0)
    kn = KeyNetwork(
        topo,
        uniform_demands(topo, 1.0),
        pool_capacity=1000,
        keys_per_service=10,
        policy="static",
        horizon_s=1000.0,
        initial_fill="empty",
    )
    rng = np.random.default_rng(1)
    kn.step(1.0, rng)
    kn.step(1.0, rng)
    lvl = kn.level.copy()
    gone = kn.discard_recent("M1-M2", 1)
    over = [i for i, p in enumerate(kn.paths) if "M1" in p and "M2" in p]
    assert over
    expect = np.minimum(lvl[over], kn.rates[over] * 1.0)
    assert gone == pytest.approx(float(expect.sum()))
    others = [i for i in range(len(kn.pairs)) if i not in over]
    assert np.array_equal(kn.level[others], lvl[others])


def test_what_if_equals_direct_engine_run(make_twin) -> None:
    twin = make_twin()
    twin.step()
    levels = {(p.src, p.dst): min(p.level, 400.0) for p in twin.keynet.pools()}
    res = twin.what_if(["V=4", "C=400"], policy="akr")
    ref = simulate(
        seed_topology(olt_rate=4.0),
        uniform_demands(seed_topology(), 1.0),
        pool_capacity=400,
        keys_per_service=10,
        policy="adaptive-key-residue",
        rng=np.random.default_rng(1),
        duration=1000.0,
        initial_levels=levels,
    )
    assert res["success_rate"] == ref.success_rate
    assert res["services"] == ref.services
    assert [p["success_rate"] for p in res["pools"]] == [p.success_rate for p in ref.pools]
    assert res["live"]["success_rate"] == twin.keynet.success_rate()


def test_what_if_uses_current_network_and_leaves_live_untouched(make_twin) -> None:
    twin = make_twin()
    twin.step()
    twin.attack("M1-M2", "intercept-resend", 1.0)
    live = twin.state()
    res = twin.what_if({"X": 20, "load": 2.0}, seed=7)
    topo = seed_topology()
    topo.graph.remove_edge("M1", "M2")
    dem = [Demand(d.src, d.dst, 2.0 / 15) for d in uniform_demands(seed_topology(), 1.0)]
    ref = simulate(
        topo,
        dem,
        pool_capacity=200,
        keys_per_service=20,
        policy="ttd-balance",
        rng=np.random.default_rng(7),
        duration=1000.0,
    )
    assert res["success_rate"] == pytest.approx(ref.success_rate, abs=0.0)
    assert res["params"]["links_down"] == ["M1-M2"]
    after = twin.state()
    for k in ("t", "pools", "links", "network"):
        assert after[k] == live[k]


def test_bad_input_names_the_field(make_twin) -> None:
    twin = make_twin()
    with pytest.raises(UnknownNameError) as e:
        twin.attack("M1-OLT9")
    assert e.value.field == "link"
    with pytest.raises(ConfigError) as e:
        twin.attack("M1-M2", "intercept-resend", 1.5)
    assert e.value.field == "fraction"
    with pytest.raises(ConfigError) as e:
        twin.attack("M1-M2", "laser-blinding")
    assert e.value.field == "type"
    for sets, field in (
        (["Q=1"], "set.Q"),
        (["V=-1"], "set.V"),
        (["C"], "set"),
        (["C=abc"], "set.C"),
        (["X=300"], "set.X"),
    ):
        with pytest.raises(ConfigError) as e:
            twin.what_if(sets)
        assert e.value.field == field
    with pytest.raises(ConfigError) as e:
        twin.what_if([], policy="fastest")
    assert e.value.field == "policy"
    assert twin.status["M1-M2"] == "up"
    twin.step()  # the twin keeps running


def test_malformed_scenarios_are_rejected(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("topology: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_twin_scenario(bad)
    assert e.value.field == "scenario"
    with pytest.raises(ConfigError) as e:
        load_twin_scenario(seed_dict(qber_threshold=0.7))
    assert e.value.field == "twin.qber_threshold"
    with pytest.raises(ConfigError) as e:
        load_twin_scenario(seed_dict(colour="red"))
    assert e.value.field == "twin.colour"
    data = seed_dict()
    data["pool_capacity"] = -1
    with pytest.raises(ConfigError) as e:
        load_twin_scenario(data)
    assert e.value.field == "pool_capacity"
    with pytest.raises(UnknownNameError) as e:
        Twin(seed_dict(links={"M1-M9": {"length_km": 3}}), data_dir=tmp_path, telemetry=False)
    assert e.value.field == "twin.links.M1-M9"
    with pytest.raises(ConfigError):
        parse_sets(["duration=0"])


def test_per_link_physics_override(make_twin) -> None:
    twin = make_twin(seed_dict(links={"OLT1-GW1.1": {"length_km": 40.0, "qber_threshold": 0.1}}))
    lk = twin.links["GW1.1-OLT1"]
    assert lk.length_km == 40.0
    assert lk.qber_threshold == 0.1
    assert twin.links["GW1.2-OLT1"].length_km == 5.0
    assert lk.key_rate_bps < twin.links["GW1.2-OLT1"].key_rate_bps


def test_history_is_bounded_and_survives_restart(make_twin) -> None:
    data = seed_dict(history=10)
    twin = make_twin(data, sub="persist")
    for _ in range(15):
        twin.step()
    twin.attack("M1-M2", "intercept-resend", 1.0)
    pts = twin.history.get(["link:M1-M2:qber"])["link:M1-M2:qber"]
    assert len(pts) == 10
    assert pts[-1][0] == 15.0
    t_end = twin.t
    twin.close()
    again = make_twin(data, sub="persist")
    assert again.t == t_end
    assert again.history.get(["link:M1-M2:qber"])["link:M1-M2:qber"] == pts
    assert [a.link for a in again.alarms.alarms] == ["M1-M2"]
    assert again.alarms.alarms[0].active is False  # every link restarts up
    assert again.alarms.alarms[0].events[-1]["what"] == "closed_on_restart"
    again.step()
    assert again.history.series["net:success_cum"][-1][0] == t_end + 1.0


def test_round_robin_runs_post_processing_on_every_link(make_twin) -> None:
    twin = make_twin()
    for _ in range(len(twin.links)):
        st = twin.step()
    for ln in st["links"]:
        pp = ln["postprocess"]
        assert pp is not None, ln["id"]
        assert pp["verified"]
        assert pp["keys_identical"]
        assert not pp["aborted"]
        assert 0 < pp["leaked_bits"] < pp["key_bits_in"] <= pp["sifted_bits"]
        assert pp["qber_estimate"] < ln["qber_threshold"]


def test_history_and_alarms_persist_in_postgresql(pg_url, make_twin) -> None:
    # pg_url first: its schema is dropped only after make_twin has closed the twins
    twin = make_twin(sub="pg-a", db_url=pg_url)
    for _ in range(3):
        twin.step()
    twin.attack("M2-M3", "intercept-resend", 1.0)
    pts = twin.history.get(["net:success_cum"])["net:success_cum"]
    twin.close()
    again = make_twin(sub="pg-b", db_url=pg_url)  # other data dir: only the database is shared
    assert again.t == 3.0
    assert again.history.get(["net:success_cum"])["net:success_cum"] == pts
    assert [a.link for a in again.alarms.alarms] == ["M2-M3"]


def test_self_simulated_links_reach_detection_only_through_the_ingest(make_twin) -> None:
    import json

    import jsonschema_rs

    from qkdtwin.interfaces import parse_link_telemetry, perf_topic, schema_path
    from qkdtwin.twin.sim_source import block_telemetry, sim_module_id

    twin = make_twin()
    sent: list[tuple[str, bytes]] = []
    inner = twin.source.publish
    twin.source.publish = lambda t, p: (sent.append((t, p)), inner(t, p))
    for _ in range(3):
        twin.step()
    validator = jsonschema_rs.validator_for(json.loads(schema_path().read_text()))
    n = len(twin.links)
    assert len(sent) == 3 * n
    for topic, payload in sent:
        validator.validate(json.loads(payload))  # the committed schema, independently
        msg = parse_link_telemetry(payload)
        assert topic == perf_topic(sim_module_id(msg.link_id))
        c = msg.intensities[0]
        assert c.errors <= c.sifted <= c.detected <= c.sent
    counts = twin.ingest.snapshot().total
    assert (counts.accepted, counts.released, counts.duplicate) == (3 * n, 3 * n, 0)
    # what the rule reads is what the ingest released, block for block
    for lid, lk in twin.links.items():
        mine = [parse_link_telemetry(p) for t, p in sent if t == perf_topic(sim_module_id(lid))]
        assert [(b.t, b.sifted, b.errors) for b in lk.blocks] == [
            (m.interval_end, m.sifted_bits, m.errors) for m in mine
        ]
    # a replayed message (same module and seq) claiming a 50 % QBER is refused as a
    # duplicate: the rule never sees it and no alarm is raised
    lid = "M1-M2"
    lk = twin.links[lid]
    last = parse_link_telemetry(sent[-n + list(twin.links).index(lid)][1])
    forged = last.model_copy(update={"errors": last.sifted_bits // 2})
    forged.intensities[0] = forged.intensities[0].model_copy(
        update={"errors": last.sifted_bits // 2}
    )
    blocks_before = list(lk.blocks)
    twin._ingest(perf_topic(last.module_id), forged.model_dump_json().encode())
    assert twin.ingest.snapshot().total.duplicate == 1
    assert list(lk.blocks) == blocks_before
    # a well-formed block is what an honest source publishes
    blk = lk.run_block(twin.t + 1.0, 1.0, np.random.default_rng(0))
    ok = block_telemetry(lk, blk, 99, 1.0)
    assert ok.sifted_bits == blk.sifted
    assert ok.intensities[0].detected == blk.detected
