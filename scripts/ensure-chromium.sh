#!/usr/bin/env bash
# Make sure Debian's chromium is installed for the dashboard's browser test (Playwright drives
# /usr/bin/chromium headless; Playwright's own browser downloads are never used).
# Idempotent: does nothing when /usr/bin/chromium exists.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: $CHROMIUM is missing and apt-get is not available;" \
         "install a Chromium browser at $CHROMIUM" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "ensure-chromium: run as root (or install sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi
echo "ensure-chromium: installing Debian's chromium (for the dashboard's browser test)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
test -x "$CHROMIUM"
