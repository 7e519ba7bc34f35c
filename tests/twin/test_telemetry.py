from __future__ import annotations

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
