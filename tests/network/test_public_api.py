from __future__ import annotations

import qkdtwin.network
import qkdtwin.network.policies


def test_network_exports():
    for mod in (qkdtwin.network, qkdtwin.network.policies):
        names = mod.__all__
        assert names == sorted(names, key=lambda s: (not s.isupper(), s))
        for name in names:
            assert hasattr(mod, name), name
    assert {"simulate", "seed_topology", "relay_costs", "Topology"} <= set(qkdtwin.network.__all__)
