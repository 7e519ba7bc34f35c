"""A Mosquitto with TLS listeners started by a test: password login and client certificates.

Used by the MQTT-over-TLS tests of the IIoT session (``tests/iot``), the twin's ingest
(``tests/twin``) and the plant (``tests/plant``). :func:`tls_mosquitto` generates a PKI (one CA,
the broker's certificate for ``127.0.0.1``/``localhost``, client certificates), a password
file (``mosquitto_passwd``) and starts Debian's ``/usr/sbin/mosquitto`` (which ``make test``
installs) with two listeners on free loopback ports:

* ``pw_port``: TLS, ``allow_anonymous false``, the password file (user :data:`USER`,
  password :data:`PASSWORD`);
* ``cert_port``: TLS, ``require_certificate true``, the certificate's CN as username.

Typical use, a module-scoped fixture::

    @pytest.fixture(scope="module")
    def tls_broker(tmp_path_factory):
        with tls_mosquitto(tmp_path_factory.mktemp("mosq")) as b:
            yield b
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qkdtwin.kms.tls import Pki, init_pki
from tests.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

#: The login the password listener accepts.
USER, PASSWORD = "alice", "s3cret"


@dataclass(frozen=True)
class TlsBroker:
    """A running TLS Mosquitto: its PKI, its two listeners, and files for clients.

    Attributes
    ----------
    pki
        The PKI: ``pki.ca_cert`` signed the broker's certificate; ``pki.saes["gw"]`` and
        ``pki.saes["stranger"]`` are client certificates and keys it accepts.
    pw_port, cert_port
        The password listener and the client-certificate listener.
    """

    pki: Pki
    pw_port: int
    cert_port: int

    @property
    def ca(self) -> str:
        """CA bundle (PEM) of the broker's certificate."""
        return str(self.pki.ca_cert)

    def client(self, name: str = "gw") -> tuple[str, str]:
        """``(cert, key)`` of a client certificate the broker accepts."""
        cert, key = self.pki.saes[name]
        return str(cert), str(key)

    def pw_url(self, user: str = USER, password: str | None = PASSWORD) -> str:
        """``mqtts://USER[:PASSWORD]@127.0.0.1:PW_PORT``."""
        auth = user if password is None else f"{user}:{password}"
        return f"mqtts://{auth}@127.0.0.1:{self.pw_port}"

    @property
    def cert_url(self) -> str:
        """``mqtts://127.0.0.1:CERT_PORT``."""
        return f"mqtts://127.0.0.1:{self.cert_port}"


def _wait_listening(proc: subprocess.Popen[bytes], ports: tuple[int, ...]) -> None:
    deadline = time.monotonic() + 10
    for port in ports:
        while True:
            assert proc.poll() is None, "mosquitto exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.05)


@contextlib.contextmanager
def tls_mosquitto(tmp: Path) -> Iterator[TlsBroker]:
    """Start a TLS Mosquitto with its PKI and password file under ``tmp``; stop it after."""
    pki = init_pki(tmp / "pki", kme_ids=["broker"], sae_ids=["gw", "stranger"])
    passwd = tmp / "passwd"
    subprocess.run([PASSWD, "-b", "-c", str(passwd), USER, PASSWORD], check=True)
    pw_port, cert_port = free_port(), free_port()
    cert, key = pki.kmes["broker"]
    conf = tmp / "mosquitto.conf"
    # started as root, mosquitto drops to the "mosquitto" user, who cannot read our 0600 keys
    who = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        who + "per_listener_settings true\n"
        f"listener {pw_port} 127.0.0.1\n"
        f"cafile {pki.ca_cert}\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {passwd}\n"
        f"listener {cert_port} 127.0.0.1\n"
        f"cafile {pki.ca_cert}\ncertfile {cert}\nkeyfile {key}\n"
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(proc, (pw_port, cert_port))
        yield TlsBroker(pki, pw_port, cert_port)
    finally:
        proc.terminate()
        proc.wait(10)
