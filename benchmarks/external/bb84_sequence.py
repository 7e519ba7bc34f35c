#!/usr/bin/env python3
"""BB84 over fibre with SeQUeNCe (Argonne), as an external speed/behaviour reference.

Run it with the throwaway venv made by ``benchmarks/external/setup.sh``::

    .bench-venv/bin/python benchmarks/external/bb84_sequence.py --pulses 200000

It builds the stock SeQUeNCe BB84 set-up (two ``QKDNode``s, polarisation encoding, one
``QuantumChannel`` Alice->Bob, a ``ClassicalChannel`` each way) and runs SeQUeNCe's own
``sequence.qkd.BB84`` protocol: Alice's ``LightSource`` emits weak coherent pulses (Poisson
photon number per pulse), each photon is carried through the lossy fibre as an event, measured
by Bob's ``QSDetectorPolarization`` (beam splitter in a random basis + two single-photon
detectors with efficiency and Poisson dark counts), and the protocol sifts over the classical
channels. Nothing of SeQUeNCe is modified; the script only counts.

How pulses are counted
----------------------
SeQUeNCe's BB84 emits in *batches*: every ``light_time = key_length / (f * mu)`` seconds Alice
calls ``LightSource.emit`` with one state per pulse slot (``round(light_time * f)`` slots, each
with a Poisson(mu) number of photons, mostly zero). The script wraps ``emit`` on the instance to
count the slots it was handed, and picks ``key_length`` so that a batch is ``--batch-pulses``
slots. The timeline is stopped just after Alice has processed the ``MATCHING_INDICES`` message
of batch ``K = ceil(pulses / batch)`` (checked afterwards). Because emission is continuous,
batch ``K+1`` has already been started by then (its photons are created but only the first few
hundred microseconds of it are propagated); those pulses are reported in
``pulses_emitted_total`` but *not* in ``pulses``, and the wall time of this tail is included in
``elapsed_s`` (it makes SeQUeNCe look at most ``1/K`` slower than it is).

QBER is SeQUeNCe's own: Alice's and Bob's sifted bits are compared, from the keys the protocol
made (``BB84.error_rates`` x ``key_length``) plus the sifted bits still waiting in
``key_bits`` (not yet a full key) on both sides.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

T_START = time.perf_counter()

import numpy  # noqa: E402
from sequence.components.optical_channel import ClassicalChannel, QuantumChannel  # noqa: E402
from sequence.kernel.event import Event  # noqa: E402
from sequence.kernel.process import Process  # noqa: E402
from sequence.kernel.timeline import Timeline  # noqa: E402
from sequence.qkd.BB84 import BB84MsgType, pair_bb84_protocols  # noqa: E402
from sequence.topology.node import QKDNode  # noqa: E402

try:
    from importlib.metadata import version as _pkg_version

    SEQUENCE_VERSION = _pkg_version("sequence")
except Exception:  # pragma: no cover - metadata missing
    SEQUENCE_VERSION = "unknown"

T_IMPORTED = time.perf_counter()

PS = 1_000_000_000_000  # picoseconds per second (SeQUeNCe's time unit)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--pulses",
        type=int,
        default=5_000_000,
        help="pulse slots to emit and sift (rounded up to whole batches)",
    )
    p.add_argument("--distance-km", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--attenuation-db-per-km", type=float, default=0.2)
    p.add_argument(
        "--rep-rate-hz",
        type=float,
        default=1.0e7,
        help="LightSource.frequency (SeQUeNCe default is 8e7)",
    )
    p.add_argument("--mu", type=float, default=0.1, help="LightSource.mean_photon_num")
    p.add_argument("--detector-efficiency", type=float, default=0.1)
    p.add_argument(
        "--dark-count-hz",
        type=float,
        default=1.0e3,
        help="Detector.dark_count, per detector, per second (Poisson process)",
    )
    p.add_argument(
        "--polarization-fidelity",
        type=float,
        default=0.98,
        help="QuantumChannel.polarization_fidelity; a failed photon gets a random "
        "linear polarisation, so e_d ~ (1 - F) / 2",
    )
    p.add_argument(
        "--misalignment",
        type=float,
        default=None,
        help="e_d; if given, sets --polarization-fidelity to 1 - 2 e_d (same physics as "
        "qkdtwin's misalignment)",
    )
    p.add_argument(
        "--dead-time-s",
        type=float,
        default=None,
        help="Detector dead time (s): Detector.count_rate = 1/dead time (SeQUeNCe default "
        "count_rate 25 MHz, i.e. 40 ns)",
    )
    p.add_argument(
        "--batch-pulses",
        type=int,
        default=None,
        help="pulse slots per LightSource.emit call, i.e. per BB84 sifting round "
        "(sets BB84 key_length = batch*mu); default: 1 ms of pulses",
    )
    p.add_argument(
        "--keep-tail",
        action="store_true",
        help="Let Alice keep emitting after the counted batches (the old behaviour)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.batch_pulses is None:
        a.batch_pulses = max(1000, round(a.rep_rate_hz * 1e-3))
    if a.pulses <= 0 or a.batch_pulses <= 0:
        raise SystemExit("--pulses and --batch-pulses must be positive")
    if a.misalignment is not None:
        a.polarization_fidelity = 1.0 - 2.0 * a.misalignment

    t_setup0 = time.perf_counter()
    # SeQUeNCe's BB84 draws Alice's bits/bases and Bob's bases from the legacy global RNG.
    numpy.random.seed(a.seed)  # noqa: NPY002
    Timeline.seed(a.seed)

    freq = float(a.rep_rate_hz)
    # BB84: light_time = key_length / (f * mu); pulses per batch = round(light_time * f)
    key_length = max(1, round(a.batch_pulses * a.mu))
    light_time = key_length / (freq * a.mu)
    batch = round(light_time * freq)
    lt_ps = round(light_time * PS)
    n_batches = math.ceil(a.pulses / batch)

    tl = Timeline()  # stop time set below, once the channel delays are known
    ls_args = {"frequency": freq, "mean_photon_num": a.mu}
    alice = QKDNode(
        "alice", tl, stack_size=1, seed=a.seed, component_templates={"LightSource": ls_args}
    )
    bob = QKDNode(
        "bob",
        tl,
        stack_size=1,
        seed=a.seed + 1_000_003,
        component_templates={"LightSource": ls_args},
    )
    pair_bb84_protocols(alice.protocol_stack[0], bob.protocol_stack[0])

    # Bob's detector pair (QKDNode.update_detector_params does not reach QSDetectorPolarization
    # in 1.3.1, so the QSDetector's own setter is used).
    qsd = bob.components[bob.name + ".qsdetector"]
    for i in range(len(qsd.detectors)):
        qsd.update_detector_params(i, "efficiency", a.detector_efficiency)
        qsd.update_detector_params(i, "dark_count", a.dark_count_hz)
        if a.dead_time_s is not None:
            qsd.update_detector_params(i, "count_rate", 1.0 / a.dead_time_s)

    dist_m = a.distance_km * 1e3
    att_db_per_m = a.attenuation_db_per_km / 1e3
    qc0 = QuantumChannel(
        "qc.alice.bob",
        tl,
        attenuation=att_db_per_m,
        distance=dist_m,
        polarization_fidelity=a.polarization_fidelity,
        frequency=freq,
    )
    qc1 = QuantumChannel(
        "qc.bob.alice",
        tl,
        attenuation=att_db_per_m,
        distance=dist_m,
        polarization_fidelity=a.polarization_fidelity,
        frequency=freq,
    )
    qc0.set_ends(alice, bob.name)
    qc1.set_ends(bob, alice.name)
    # QuantumChannel draws its polarisation noise from Entity.get_generator(), which for an
    # entity without an owner is a fresh *unseeded* numpy default_rng(); give the channels
    # their sender as owner so --seed makes runs repeatable (nothing else reads .owner here).
    qc0.owner = alice
    qc1.owner = bob
    cc0 = ClassicalChannel("cc.alice.bob", tl, distance=dist_m)
    cc1 = ClassicalChannel("cc.bob.alice", tl, distance=dist_m)
    cc0.set_ends(alice, bob.name)
    cc1.set_ends(bob, alice.name)

    # Count the pulse slots the light source is actually handed (one call per batch).
    ls = alice.components[alice.name + ".lightsource"]
    counts = {"slots": 0, "calls": 0}
    original_emit = ls.emit

    def counting_emit(state_list):
        counts["slots"] += len(state_list)
        counts["calls"] += 1
        return original_emit(state_list)

    ls.emit = counting_emit

    alice_bb84 = alice.protocol_stack[0]
    bob_bb84 = bob.protocol_stack[0]

    # Switch Alice off after the K batches that are counted: without this, emission goes on
    # (photons, events, basis lists, Bob's sifting loop) for the qdelay + 3 cdelay it takes to
    # sift batch K, which at 100 km is 2 ms = 1.6e5 slots at 80 MHz, more than a 1e5-pulse run.
    # After K batches Alice no longer emits or reschedules, and ignores Bob's RECEIVED_QUBITS for
    # the (empty) batches Bob still closes; nothing else changes.
    original_begin = alice_bb84.begin_photon_pulse
    original_received = alice_bb84.received_message
    rq = {"n": 0}

    def bounded_begin():
        if counts["calls"] < n_batches:
            original_begin()

    def bounded_received(src, msg):
        if msg.msg_type is BB84MsgType.RECEIVED_QUBITS:
            rq["n"] += 1
            if rq["n"] > n_batches:
                return None
        return original_received(src, msg)

    if not a.keep_tail:
        alice_bb84.begin_photon_pulse = bounded_begin
        alice_bb84.received_message = bounded_received
    # Ask for (practically) unlimited keys of key_length bits; the run is bounded by stop time.
    tl.schedule(Event(0, Process(alice_bb84, "push", [key_length, 10**12])))

    tl.init()  # computes channel delay/loss
    cdelay = cc0.delay
    qdelay = qc0.delay
    start = cdelay  # Alice's first begin_photon_pulse
    # Bob closes batch k (0-based) at start + qdelay + (k+1)*(lt_ps - 1) (BB84 reschedules
    # end_photon_pulse every lt_ps - 1 ps); RECEIVED_QUBITS, BASIS_LIST and MATCHING_INDICES
    # then take one classical delay each, so Alice finishes sifting batch K-1 at
    # start + qdelay + K*(lt_ps - 1) + 3*cdelay. Stop 1 us after the drift-free time of that.
    margin = 1_000_000
    stop = start + qdelay + n_batches * lt_ps + 3 * cdelay + margin
    if margin + n_batches + 1 >= lt_ps:
        raise SystemExit("batches too short for the stop-time margin; raise --batch-pulses")
    tl.stop_time = stop
    t_setup1 = time.perf_counter()

    t0 = time.perf_counter()
    tl.run()
    elapsed = time.perf_counter() - t0

    # Batches whose sifting finished at Alice: bit_lists is appended on emit, popped on
    # MATCHING_INDICES.
    batches_sifted = counts["calls"] - len(alice_bb84.bit_lists)
    if batches_sifted != n_batches:
        raise SystemExit(
            f"expected {n_batches} sifted batches, got {batches_sifted} (emitted {counts['calls']})"
        )
    pulses = batches_sifted * batch

    n_keys = len(alice_bb84.error_rates)
    key_errors = sum(round(er * key_length) for er in alice_bb84.error_rates)
    left_a = [int(x) for x in alice_bb84.key_bits]
    # Bob may already hold sifted bits of later batches (BASIS_LIST reaches him one classical
    # delay before MATCHING_INDICES reaches Alice); both lists start at the same pulse.
    left_b = [int(x) for x in bob_bb84.key_bits][: len(left_a)]
    if len(left_a) != len(left_b):
        raise SystemExit(f"Alice/Bob sifted bits out of step: {len(left_a)} vs {len(left_b)}")
    left_errors = sum(x != y for x, y in zip(left_a, left_b, strict=True))
    sifted = n_keys * key_length + len(left_a)
    errors = key_errors + left_errors
    qber = errors / sifted if sifted else None

    # Expectation for a sanity check (threshold detectors, squashing: double clicks dropped).
    eta = 10 ** (-a.attenuation_db_per_km * a.distance_km / 10) * a.detector_efficiency
    p_sig = 1 - math.exp(-a.mu * eta)
    p_dark = a.dark_count_hz / freq  # a dark click anywhere in a slot is assigned to that slot
    # Dead time: Detector.record_detection accepts a click only if now > t_last + period, so a
    # click blinds the slots k >= 1 with k * slot <= period (3 slots for 40 ns at 80 MHz).
    period_ps = math.ceil(1e12 / qsd.detectors[0].count_rate)
    slot_ps = round(PS / freq)
    dead_slots = period_ps // slot_ps
    # non-paralysable, per detector: click rate q / (1 + d q), q = half the pair's click prob.
    q_det = (p_sig + 2 * p_dark) / 2
    p_click = 2 * q_det / (1 + dead_slots * q_det)
    expected_sifted = pulses * 0.5 * p_click
    e_d = (1 - a.polarization_fidelity) / 2
    expected_qber = (e_d * p_sig + p_dark) / (p_sig + 2 * p_dark)

    out = {
        "simulator": "sequence",
        "version": SEQUENCE_VERSION,
        "python": sys.version.split()[0],
        "task": f"BB84 {a.distance_km:g} km",
        "pulses": pulses,
        "pulses_requested": a.pulses,
        "pulses_emitted_total": counts["slots"],
        "photons_emitted_total": ls.photon_counter,
        "elapsed_s": round(elapsed, 4),
        "setup_s": round(t_setup1 - t_setup0, 4),
        "import_s": round(T_IMPORTED - T_START, 4),
        "pulses_per_s": round(pulses / elapsed, 1),
        "sifted_bits": sifted,
        "qber": qber,
        "errors": errors,
        "keys_made": n_keys,
        "expected_sifted_bits": round(expected_sifted, 1),
        "detection_prob_measured": 2 * sifted / pulses,
        "detection_prob_expected": p_click,
        "detection_prob_expected_no_dead_time": p_sig + 2 * p_dark,
        "expected_qber": round(expected_qber, 5),
        "simulated_time_s": tl.now() / PS,
        "events_executed": tl.run_counter,
        "params": {
            "distance_km": a.distance_km,
            "attenuation_db_per_km": a.attenuation_db_per_km,
            "rep_rate_hz": freq,
            "mu": a.mu,
            "detector_efficiency": a.detector_efficiency,
            "dark_count_hz_per_detector": a.dark_count_hz,
            "dark_count_prob_per_slot_per_detector": p_dark,
            "polarization_fidelity": a.polarization_fidelity,
            "misalignment_equiv": (1 - a.polarization_fidelity) / 2,
            "detector_dead_time_s": 1 / qsd.detectors[0].count_rate,
            "dead_slots": dead_slots,
            "tail_switched_off": not a.keep_tail,
            "batch_pulses": batch,
            "batches": batches_sifted,
            "key_length": key_length,
            "seed": a.seed,
        },
        "notes": (
            "pulses = pulse slots handed to SeQUeNCe LightSource.emit (counted by wrapping it) "
            "in the batches whose BB84 sifting completed (Alice processed MATCHING_INDICES); "
            "Alice stops emitting after them (unless --keep-tail), so pulses_emitted_total "
            "= pulses. elapsed_s = Timeline.run() wall time only. "
            "detection_prob_measured = 2 sifted_bits / pulses. "
            "qber = SeQUeNCe BB84 key error rates x key_length + leftover sifted bits compared."
        ),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
