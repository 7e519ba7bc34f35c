"""Fixtures of the IIoT telemetry tests: key supplies, the real Mosquitto, an embedded broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qkdtwin.iot import EmbeddedBroker, LocalKeyPair, MqttTransport

MOSQUITTO = "mqtt://127.0.0.1:1883"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[LocalKeyPair]:
    """An in-process key supply with 64 keys and no background feeder (deterministic)."""
    with LocalKeyPair(tmp_path / "kms", initial_keys=64, feed=False, batch=4) as p:
        yield p


@pytest.fixture(scope="session")
def embedded() -> Iterator[EmbeddedBroker]:
    """One amqtt broker for the whole test session (starting one takes ~0.5 s)."""
    with EmbeddedBroker() as broker:
        yield broker


class Sniffer:
    """An MQTT client that records every payload published under a topic filter."""

    def __init__(self, host: str, port: int, pattern: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = MqttTransport(host, port)
        self.client.subscribe(pattern, self._on)

    def _on(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.messages.append((topic, payload))

    def wait_for(
        self, cond: Callable[[list[tuple[str, bytes]]], bool], timeout_s: float = 20.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if cond(self.messages):
                    return
            time.sleep(0.01)
        raise AssertionError("sniffer did not see the expected messages")

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def sniffer_factory() -> Iterator[Callable[[str, int, str], Sniffer]]:
    made: list[Sniffer] = []

    def make(host: str, port: int, pattern: str) -> Sniffer:
        s = Sniffer(host, port, pattern)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
