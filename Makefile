# qkdtwin — the single entry point for humans and CI.
#   make demo   set up .venv, run the tour on embedded defaults (no server needed), then start
#               the live twin and its dashboard (TWIN_SERVE=--no-serve: stop after its tour)
#   make test   set up .venv and the test services, then run the whole test suite
#   make bench  run the benchmarks and rewrite BENCHMARKS.md
#   make notebook  run the example notebook (Fig. 4, key rate vs distance) into out/notebook/
#   make lint   ruff (lint + format check) and mypy

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out/demo
TWIN_PORT  ?= 8000
TWIN_SERVE ?= --serve

.PHONY: all venv demo test test-slow bench notebook lint format services clean

all: test

# (Re)build the venv only when pyproject.toml changed or the venv is missing/broken.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "qkdtwin needs Python >= 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[all,conformance,dev]'
	@# pysparkplug: the independent Sparkplug B decoder of tests/iot/test_sparkplug*.py. It pins
	@# paho-mqtt<2 for its own client, which the tests never use; qkdtwin needs paho-mqtt>=2, so
	@# it is installed without its dependencies (its decoder needs only protobuf: [sparkplug]).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps pysparkplug==0.6.1
	@# compile the numba kernels now (cached on disk), not in the user's first command
	$(BIN)/python scripts/warm_numba.py
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	@mkdir -p $(OUT)
	@echo "== Analytic secret key rate vs distance, every protocol against the PLOB bound"
	$(BIN)/qkdtwin link rate --protocol all --distance-km 0:300:10 --preset gys \
		--plot $(OUT)/key_rate_vs_distance.png
	$(BIN)/qkdtwin link rate --protocol all --distance-km 0:300:2 --preset gys \
		--plot $(OUT)/key_rate_vs_distance.svg --json > $(OUT)/key_rate_vs_distance.json
	@echo "== Reach of decoy-state BB84 with the GYS parameters (Lo-Ma-Chen 2005)"
	$(BIN)/qkdtwin link max-distance --protocol decoy-bb84 --preset gys
	$(BIN)/qkdtwin link max-distance --protocol decoy-bb84 --preset gys --decoy-bound infinite
	@echo "== Pulse-by-pulse decoy-state BB84, 10^8 pulses over 50 km"
	$(BIN)/qkdtwin link simulate --protocol decoy-bb84 --distance-km 50 --pulses 1e8 --seed 1
	@echo "== Full intercept-resend on BB84: the QBER jumps to ~25%"
	$(BIN)/qkdtwin link simulate --protocol bb84 --distance-km 25 --pulses 2e7 \
		--attack intercept-resend:1 --seed 2
	@echo "== Photon-number splitting at 60 km: QBER unchanged, decoy estimate of Y1 collapses"
	$(BIN)/qkdtwin link simulate --protocol decoy-bb84 --distance-km 60 --pulses 1e8 \
		--attack pns --seed 3
	@echo "== Full chain: 10^7 pulses, Cascade, verification, Toeplitz PA -> identical keys"
	$(BIN)/qkdtwin link simulate --protocol decoy-bb84 --distance-km 25 --pulses 1e7 \
		--preset boaron2018 --postprocess --keys-out $(OUT)/keys.txt --seed 5
	@echo "== Controlled teleportation (GHZ5 + Bell): Bob's corrections and fidelity"
	$(BIN)/qkdtwin teleport table
	$(BIN)/qkdtwin teleport run --trials 2000 --seed 6
	$(BIN)/qkdtwin teleport run --trials 2000 --no-controller --seed 6
	$(BIN)/qkdtwin teleport eavesdrop --decoys 1:10 --trials 20000 --plot $(OUT)/decoy_detection.png
	@echo "== Key network twin: the seed topology, then the paper's Figures 4 and 5"
	$(BIN)/qkdtwin network run examples/network-seed.yaml
	$(BIN)/qkdtwin reproduce fig4 --out $(OUT)/fig4
	$(BIN)/qkdtwin reproduce fig5 --out $(OUT)/fig5
	@echo "== E91 with an SPDC source: CHSH value from the simulated correlations"
	$(BIN)/qkdtwin link simulate --protocol e91 --distance-km 20 --pulses 5e7 --seed 4
	@echo "Plots written to $(OUT)/"
	@echo "== The self-simulated twin (teaching mode): attack -> alarm -> reroute, a what-if"
	$(BIN)/qkdtwin twin demo --port $(TWIN_PORT) --no-serve
	@echo "== The twin of a network it does not own: a plant process with hidden truth, a twin"
	@echo "   attached to its MQTT telemetry and KMEs; a PNS attack and a fibre tap injected on the"
	@echo "   plant, each detected from the statistics alone; then the dashboard keeps serving until"
	@echo "   Ctrl-C (make demo TWIN_SERVE=--no-serve to stop after the tour)"
	$(BIN)/qkdtwin twin attach-demo --port $(TWIN_PORT) --data-dir $(OUT)/attach $(TWIN_SERVE)

services:
	@bash scripts/ensure-services.sh
	@bash scripts/ensure-chromium.sh

# CI (CI=true) also measures coverage and prints it (pytest-cov, one line per file below 100 %)
COV = $(if $(CI),--cov=qkdtwin --cov-report=term:skip-covered,)

# everything but `slow`, in parallel, doctests included; the 20 slowest tests are printed
test: venv services
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow" -n auto --durations=20 \
		--doctest-modules src/qkdtwin tests $(COV)

test-slow: venv services
	$(BIN)/python -m pytest -q -m slow -n auto --durations=20

bench: venv services
	$(BIN)/python -m pytest -q -m slow
	$(BIN)/python benchmarks/link_throughput.py --write BENCHMARKS.md
	bash benchmarks/external/setup.sh
	$(BIN)/python benchmarks/sequence_regimes.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/postprocess.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/network_engine.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/network_scale.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/seed_regression.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/akr_readings.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/kms_load.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/kms_roundtrip.py --write BENCHMARKS.md --profile
	$(BIN)/python benchmarks/kms_overload.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/kms_overload.py --both --write BENCHMARKS.md
	$(BIN)/python benchmarks/iot_pipeline.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/twin_load.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/twin_scale.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/twin_attached_scale.py --points 100:0,300:0,1000:0,1000:10 --write BENCHMARKS.md
	$(BIN)/python benchmarks/twin_attached_scale.py --live --cases plant,feed --live-warmup 660 --write BENCHMARKS.md
	$(BIN)/python benchmarks/twin_memory.py --marks 60,300,600,900 --write BENCHMARKS.md
	$(BIN)/python benchmarks/network_replications.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/twin_attach.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/forecast.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/closed_loop.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/exposure.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/cli_startup.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/readme_commands.py --write BENCHMARKS.md
	$(BIN)/python benchmarks/dead_time.py --write BENCHMARKS.md
	$(MAKE) notebook

# The example notebook at full size (10 seeds per Fig. 4 point, key rates every 1 km, ~15 s):
# executed copy, figures and summary under out/notebook/; `make test` runs it small.
notebook: venv
	$(BIN)/python benchmarks/run_notebook.py --size full --out out/notebook

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .bench-venv out .pytest_cache .ruff_cache .mypy_cache .hypothesis
