#!/usr/bin/env bash
# Make sure the servers that the test suite talks to are running on this machine:
# PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) and Mosquitto on 127.0.0.1:1883.
# Installs the Debian packages where they are missing and starts them where they are down.
# Idempotent: on a machine where both already run it only checks.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL -------------------------------------------------------------------------
if ! port_open 5432; then
  if ! ls /etc/postgresql >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "ensure-services: installing postgresql" >&2
    apt_install postgresql
  fi
  ver="$(ls /etc/postgresql | sort -V | tail -1)"
  conf="/etc/postgresql/$ver/main"
  # trust auth on loopback for the test role, as on the project machines
  if ! grep -q "qkdtwin-test" "$conf/pg_hba.conf" 2>/dev/null; then
    $SUDO sed -i '1i # qkdtwin-test\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$conf/pg_hba.conf"
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || $SUDO service postgresql start
  for _ in $(seq 1 30); do port_open 5432 && break; sleep 1; done
fi
if ! port_open 5432; then echo "ensure-services: PostgreSQL is not reachable on 5432" >&2; exit 1; fi
if command -v psql >/dev/null 2>&1; then
  if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -c 'create database test' >/dev/null 2>&1 \
      || su postgres -c "createdb test" >/dev/null 2>&1 || true
  fi
fi

# --- Mosquitto --------------------------------------------------------------------------
if ! port_open 1883; then
  if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "ensure-services: installing mosquitto" >&2
    apt_install mosquitto
  fi
  PATH="$PATH:/usr/sbin" mosquitto -d -c /etc/mosquitto/mosquitto.conf \
    || $SUDO service mosquitto start
  for _ in $(seq 1 30); do port_open 1883 && break; sleep 1; done
fi
if ! port_open 1883; then echo "ensure-services: Mosquitto is not reachable on 1883" >&2; exit 1; fi
echo "ensure-services: PostgreSQL :5432 and Mosquitto :1883 are up" >&2
