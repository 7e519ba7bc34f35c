#!/usr/bin/env bash
# Create (idempotently) the throwaway venv .bench-venv with the external QKD simulator(s)
# used by benchmarks/external/*.py. Never touches the project venv (.venv).
#
#   bash benchmarks/external/setup.sh          # create / check
#   BENCH_PYTHON=/path/to/python3.12 bash benchmarks/external/setup.sh
#   BENCH_FORCE=1 bash benchmarks/external/setup.sh   # rebuild from scratch
#
# SeQUeNCe 1.3.1 (the current release) declares Requires-Python >=3.12,<3.15, so a Python
# 3.12/3.13 interpreter is looked for (PATH, then pyenv). If only 3.11 exists, the last
# release that supports it, SeQUeNCe 0.8.5, is installed instead (same BB84 API; the JSON
# output of the benchmark reports which version ran).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.bench-venv}"   # BENCH_VENV overrides (for testing)

SEQ_PIN_NEW="1.3.1"   # needs Python >= 3.12
SEQ_PIN_OLD="0.8.5"   # last release installable on Python 3.11

py_minor() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }

# Print the first candidate interpreter that actually runs (pyenv shims exist on PATH for
# versions that are installed but not selected, and fail when run) and is in the wanted range.
first_working() {  # first_working MINOR_REGEX CANDIDATE...
    local want="$1" c v; shift
    for c in "$@"; do
        [[ -n "$c" ]] || continue
        v="$(py_minor "$c")"
        if [[ -n "$v" && "$v" =~ $want ]]; then echo "$c"; return 0; fi
    done
    return 1
}

find_python() {
    if [[ -n "${BENCH_PYTHON:-}" ]]; then
        echo "$BENCH_PYTHON"; return 0
    fi
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    if command -v pyenv >/dev/null 2>&1; then pyenv_root="$(pyenv root)"; fi
    local cands=()
    local c
    for c in python3.12 python3.13; do
        cands+=("$(command -v "$c" 2>/dev/null || true)")
    done
    for c in "$pyenv_root"/versions/3.12*/bin/python3.12 "$pyenv_root"/versions/3.13*/bin/python3.13; do
        [[ -x "$c" ]] && cands+=("$c")
    done
    first_working '^3\.1[234]$' "${cands[@]}" && return 0
    first_working '^3\.(9|10|11)$' \
        "$(command -v python3.11 2>/dev/null || true)" "$(command -v python3 2>/dev/null || true)"
}

PY="$(find_python)" || { echo "setup.sh: no python3 interpreter found" >&2; exit 1; }
PY_VER="$(py_minor "$PY")"
case "$PY_VER" in
    3.12|3.13|3.14) SEQ_PIN="$SEQ_PIN_NEW" ;;
    3.9|3.10|3.11)  SEQ_PIN="$SEQ_PIN_OLD"
                    echo "setup.sh: Python $PY_VER at $PY (< 3.12, sequence 1.3.1 needs >= 3.12); installing sequence==$SEQ_PIN" >&2 ;;
    *) echo "setup.sh: unsupported Python $PY_VER at $PY" >&2; exit 1 ;;
esac

installed_version() {
    "$VENV/bin/python" - <<'EOF' 2>/dev/null || true
from importlib.metadata import version
try:
    print(version("sequence"))
except Exception:
    pass
EOF
}

if [[ "${BENCH_FORCE:-0}" == "1" && -d "$VENV" ]]; then
    rm -rf "$VENV"
fi

# Recreate the venv if it is missing, broken, or built on another Python minor version.
if [[ -x "$VENV/bin/python" ]]; then
    if [[ "$(py_minor "$VENV/bin/python")" != "$PY_VER" ]]; then
        echo "setup.sh: $VENV uses another Python; recreating" >&2
        rm -rf "$VENV"
    fi
elif [[ -e "$VENV" ]]; then
    rm -rf "$VENV"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup.sh: creating $VENV with $PY ($PY_VER)" >&2
    "$PY" -m venv "$VENV"
fi

if [[ "$(installed_version)" == "$SEQ_PIN" ]]; then
    echo "setup.sh: sequence==$SEQ_PIN already installed in $VENV" >&2
else
    echo "setup.sh: installing sequence==$SEQ_PIN into $VENV" >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "sequence==$SEQ_PIN"
    got="$(installed_version)"
    if [[ "$got" != "$SEQ_PIN" ]]; then
        echo "setup.sh: sequence install failed (found '${got}')" >&2
        exit 1
    fi
    "$VENV/bin/python" -m pip freeze --disable-pip-version-check > "$VENV/pip-freeze.txt"
fi

# Smoke check: the modules the benchmark uses import.
"$VENV/bin/python" -c 'import sequence.qkd.BB84, sequence.topology.node, sequence.components.optical_channel'
echo "setup.sh: ready: $VENV/bin/python (Python $PY_VER, sequence $SEQ_PIN)" >&2
