"""The in-process bus delivers like a broker: every matching filter, in subscription order."""

from __future__ import annotations

import itertools
import random

from qkdtwin.iot import MemoryBus
from qkdtwin.iot.transport import topic_matches


def test_bus_delivers_to_every_matching_filter_in_subscription_order() -> None:
    rng = random.Random(7)
    words = ["a", "b", "c"]
    filters = [
        "/".join(p) for n in (1, 2, 3) for p in itertools.product([*words, "+"], repeat=n)
    ] + ["#", "a/#", "+/b/#"]
    rng.shuffle(filters)
    bus = MemoryBus()
    got: list[tuple[int, str]] = []
    clients = []
    for i, f in enumerate(filters):
        c = bus.client()
        clients.append(c)
        c.subscribe(f, lambda t, _p, i=i: got.append((i, t)))
    closed = set(rng.sample(range(len(filters)), 10))
    for i in closed:
        clients[i].close()
    pub = bus.client()
    names = ["/".join(p) for n in (1, 2, 3, 4) for p in itertools.product(words, repeat=n)]
    for name in names:
        got.clear()
        pub.publish(name, b"x")
        # the reference: a linear scan of every open subscription, in order
        want = [
            (i, name) for i, f in enumerate(filters) if i not in closed and topic_matches(f, name)
        ]
        assert got == want, name


def test_a_will_reaches_exact_and_wildcard_subscribers() -> None:
    bus = MemoryBus()
    seen: list[str] = []
    bus.client().subscribe("g/NDEATH/e1", lambda t, p: seen.append("exact"))
    bus.client().subscribe("g/+/e1", lambda t, p: seen.append("wild"))
    c = bus.client(will=("g/NDEATH/e1", b"gone"))
    c.close(graceful=False)
    assert seen == ["exact", "wild"]
