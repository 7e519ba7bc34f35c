from __future__ import annotations

import os

import pytest

from qkdtwin.errors import ConfigError

from .conftest import seed_dict


def test_telemetry_uses_relayed_qkd_keys_and_fails_closed_without_a_path(make_twin) -> None:
    data = seed_dict(
        devices_per_gateway=3,
        kme_feed_every=1,
        telemetry={"broker": "memory", "rekey_messages": 9},
    )
    twin = make_twin(data, telemetry=True)
    assert twin.telemetry is not None
    for _ in range(15):  # keys reach every gateway within a few ticks, queues drain
        st = twin.step()
        if st["telemetry"]["queued"] == 0 and st["telemetry"]["sent"] == 18:
            break
    st = twin.step()
    tel = st["telemetry"]
    assert tel["enabled"]
    assert tel["sessions"] == 6
    assert tel["aggregator"] == "M1"
    assert tel["sent"] == tel["delivered"] == 18
    assert tel["decrypt_failures"] == 0
    full = twin.state()
    assert len(full["devices"]) == 18
    assert {d["gateway"] for d in full["devices"]} == {
        f"GW{i}.{j}" for i in (1, 2, 3) for j in (1, 2)
    }
    assert all(d["health"] in ("ok", "fault", "drift") for d in full["devices"])
    # every end-to-end key crossed its path: one link key consumed per hop, audited "relay"
    comp = twin.telemetry
    g = next(x for x in comp.gws if x.node == "GW3.1")
    assert g.path == ["GW3.1", "OLT3", "M3", "M1"]
    relays = [
        a for a in twin.kmes.links["GW3.1-OLT3"].store_a.audit_log() if a["action"] == "relay"
    ]
    assert len(relays) == g.relayed >= 1
    # cut GW1.1's only access link: its key source is cut, it fails closed after rekeying
    twin.attack("GW1.1-OLT1", "intercept-resend", 1.0)
    for _ in range(6):  # its ready keys and epoch run out within 3 + 2 ticks
        st = twin.step()
    tel = st["telemetry"]
    assert tel["gateways_cut"] == 1
    assert tel["key_failures"].get("KeyExhaustedError", 0) >= 1
    assert tel["sent"] == tel["delivered"] == 15  # the 5 other gateways keep reporting
    assert tel["queued"] >= 3
    twin.clear("GW1.1-OLT1")
    for _ in range(3):
        st = twin.step()
    assert st["telemetry"]["gateways_cut"] == 0
    assert st["telemetry"]["queued"] == 0


def test_bad_telemetry_options_are_named(make_twin) -> None:
    with pytest.raises(ConfigError) as e:
        make_twin(seed_dict(telemetry={"broker": "memory", "scheme": "teleport"}), telemetry=True)
    assert e.value.field == "twin.telemetry.scheme"
    with pytest.raises(ConfigError) as e:
        make_twin(seed_dict(aggregator="M9", telemetry={"broker": "memory"}), telemetry=True)
    assert e.value.field == "twin.aggregator"
    # the fields the twin sets itself are refused by name (interval_s was a TypeError)
    for own in ("devices", "edge_id", "seed", "interval_s"):
        with pytest.raises(ConfigError) as e:
            make_twin(seed_dict(telemetry={"broker": "memory", own: 1}), telemetry=True)
        assert e.value.field == f"twin.telemetry.{own}"


def test_starved_gateways_fail_without_touching_their_store(make_twin, monkeypatch) -> None:
    """A gateway the twin relayed no key to is refused at once, with the store's own error,
    and the twin's count of ready keys equals what the store holds at every tick."""
    from qkdtwin.kms import KeyStore

    calls: list[str] = []
    real = KeyStore.reserve

    def counting(self, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(str(self.url))
        return real(self, *a, **k)

    monkeypatch.setattr(KeyStore, "reserve", counting)
    # no link key reaches a KME for 100 ticks: nothing can be relayed, no gateway has a key
    starved = make_twin(
        seed_dict(devices_per_gateway=2, kme_feed_every=100, telemetry={"broker": "memory"}),
        telemetry=True,
    )
    for _ in range(3):
        st = starved.step()
        assert st["telemetry"]["key_failures"] == {"KeyExhaustedError": 6}
        assert st["telemetry"]["sent"] == 0
    assert calls == []  # 18 refusals, not one store transaction
    # fed at every tick: keys are relayed and drawn, and the count follows the stores
    twin = make_twin(
        seed_dict(devices_per_gateway=2, kme_feed_every=1, telemetry={"broker": "memory"}),
        telemetry=True,
    )
    comp = twin.telemetry
    assert comp is not None
    for _ in range(6):
        twin.step()
        for g in comp.gws:
            assert g.ready == g.gw_store.available_count(256)
    assert any(u.endswith("@gw.db") for u in calls)  # the gateways drew their keys
    assert all(g.relayed >= 1 for g in comp.gws)


def test_relay_budget_follows_the_key_demand() -> None:
    from qkdtwin.iot import TelemetryConfig
    from qkdtwin.twin.telemetry import MAX_RELAYS_PER_TICK, relay_budget

    conf = TelemetryConfig.build(devices=10, edge_id="e", seed=1, broker="memory")
    assert relay_budget(6, conf) == MAX_RELAYS_PER_TICK  # the seed network: the floor
    # 1,000 gateways, an epoch every 60 s: 16.7 keys per 1-s tick on average, twice that
    assert relay_budget(1000, conf) == 34
    fast = TelemetryConfig.build(devices=10, edge_id="e", seed=1, broker="memory", rekey_messages=5)
    # an epoch every 5 readings of 10 devices: 2 per gateway per tick
    assert relay_budget(100, fast) == 400


def test_between_ticks_stores_hold_no_descriptors_and_sessions_no_history(make_twin) -> None:
    """Four SQLite stores per gateway link (the link's two KME stores, the gateway's and the
    aggregator's end-to-end stores): kept connections held ~5 descriptors each, and a twin of
    1,000 links ran out of descriptors after minutes (its API then stopped answering). Between
    ticks, after relays, deliveries and checkpoints, no store may hold one. The reference is
    the kernel's list of this process's descriptors; with kept connections the count is ~100.
    """
    from pathlib import Path

    data = seed_dict(devices_per_gateway=2, kme_feed_every=1, telemetry={"broker": "memory"})
    twin = make_twin(data, telemetry=True)
    assert twin.telemetry is not None
    for _ in range(8):
        twin.step()
    assert sum(g.relayed for g in twin.telemetry.gws) >= 6  # every gateway got keys
    # nor does a session keep its latencies, tick after tick, for ever
    assert all(g.session is not None and g.session.latencies == [] for g in twin.telemetry.gws)
    for lk in twin.kmes.links.values():  # what the background checkpointer does
        lk.store_a.checkpoint()
        lk.store_b.checkpoint()
    root = Path(twin.data_dir).resolve()
    dirs = (f"{root / 'kme'}/", f"{root / 'e2e'}/")
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while listing
            continue
        if target.startswith(dirs):
            held.append(target)
    assert held == []


def test_device_table_decodes_on_demand_and_pages_like_a_plain_list(make_twin) -> None:
    """The twin keeps every device's latest reading encoded (a tick replaced one dict per
    device; at 10,000 devices they forced a full garbage collection every ~17 ticks). Between
    ticks no decoded reading or device dict may exist; the full state, the device pages and
    their filters must equal the plain-list computation on the full state, the reference."""
    import gc

    from qkdtwin.iot import Reading
    from qkdtwin.iot.devices import decode_reading
    from qkdtwin.twin.device_table import DeviceTable

    data = seed_dict(devices_per_gateway=4, kme_feed_every=1, telemetry={"broker": "memory"})
    twin = make_twin(data, telemetry=True)
    assert twin.telemetry is not None
    for _ in range(12):
        st = twin.step()
        if st["telemetry"].get("delivered") == 24 and st["telemetry"]["queued"] == 0:
            break
    assert st["telemetry"]["delivered"] == 24
    assert isinstance(twin.devices, DeviceTable)
    assert len(twin.devices) == 24
    tracked = gc.get_objects()
    assert not any(type(o) is Reading for o in tracked)
    assert not any(
        type(o) is dict and isinstance(o.get("device_id"), str) and "gateway" in o for o in tracked
    )
    del tracked
    # the table against the aggregator's own readings, decoded independently
    comp = twin.telemetry
    for g in comp.gws:
        assert g.session is not None
        assert g.session.aggregator is not None
        for dev, raw in g.session.aggregator.latest.encoded_items():
            r = decode_reading(raw)
            assert twin.devices[dev] == {
                "device_id": dev,
                "gateway": g.node,
                "kind": r.kind,
                "t": r.t,
                "values": r.values,
                "health": r.health,
            }
    full = twin.state()["devices"]
    assert [d["device_id"] for d in full] == list(twin.devices)
    # force some variety of health, then compare every filter and page with the reference
    healths = {d["health"] for d in full}
    for gateway in (None, "GW1.1", "GW3.2"):
        for health in (None, "ok", "fault", "drift", *healths):
            want = [
                d
                for d in full
                if (gateway is None or d["gateway"] == gateway)
                and (health is None or d["health"] == health)
            ]
            for offset, limit in ((0, None), (1, 2), (3, 50)):
                _tel, total, page = twin.device_page(
                    offset=offset, limit=limit, gateway=gateway, health=health
                )
                end = None if limit is None else offset + limit
                assert total == len(want)
                assert page == want[offset:end]
