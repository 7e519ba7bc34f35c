"""An NCMD rekey command makes the gateway start a new epoch at once."""

from __future__ import annotations

import json

from qkdtwin.iot import TelemetryConfig, TelemetrySession
from qkdtwin.iot.transport import topic


def test_a_rekey_command_starts_a_new_epoch_before_the_next_reading(pair):
    cfg = TelemetryConfig.build(devices=3, broker="memory", edge_id="gw", group_id="g")
    with TelemetrySession(cfg, pair.gateway_source, pair.aggregator_source) as s:
        assert s.run_interval().epochs_started == 1
        assert s.run_interval().epochs_started == 0  # same epoch (60 s rekey period)
        cmd = s._gw_t  # a command arrives over the same bus
        cmd.publish(topic("g", "NCMD", "gw"), json.dumps({"rekey": True}).encode())
        cmd.publish(topic("g", "NCMD", "gw"), b"not json")
        r3 = s.run_interval()
        assert r3.epochs_started == 1
        assert r3.delivered == r3.sent  # the aggregator follows the new epoch
        assert s.totals["commands.rekey"] == 1
        assert s.totals["commands.malformed"] == 1
