"""Development key supplies of two SAEs: two KMEs on loopback with an ETSI 014 client each.

:class:`DevKmeLink` is the KME side of :class:`qkdtwin.iot.DevKmePair` (what ``qkdtwin kms
dev-pair`` runs, :class:`~qkdtwin.kms.devnet.DevNetwork` with two KMEs and one simulated
decoy-BB84 link) plus a mutual-TLS :class:`~qkdtwin.kms.client.KmeClient` for the master SAE
at ``kme-a`` and one for the slave SAE at ``kme-b``. It starts the servers; the IIoT layer only
wraps the two clients in key sources. :func:`dev_workdir` is the working directory (given or
temporary) that the development key supplies share.

Example::

    with DevKmeLink(tmp, initial_keys=16, feed=False) as link:
        link.master_client.get_keys(link.slave_sae, number=1)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from qkdtwin.errors import ConfigError

if TYPE_CHECKING:
    from qkdtwin.kms.client import KmeClient

__all__ = ["DevKmeLink", "dev_workdir"]


def dev_workdir(
    directory: Path | None, initial_keys: int, *, prefix: str = "iot-"
) -> tuple[tempfile.TemporaryDirectory[str] | None, Path]:
    """Check ``initial_keys``; return ``(temporary directory or None, the directory to use)``.

    Raises
    ------
    ConfigError
        If ``initial_keys`` is negative.
    """
    if initial_keys < 0:
        raise ConfigError("initial_keys must be >= 0", field="initial_keys")
    tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix=prefix)
    path = Path(tmp.name) if tmp is not None else Path(directory or ".")
    path.mkdir(parents=True, exist_ok=True)
    return tmp, path


class DevKmeLink:
    """Two real KMEs on loopback (ETSI GS QKD 014 over mutual TLS), fed by a simulated link.

    A fresh development PKI in ``directory``, a store per KME, the feeder pushing the same keys
    into both (the pool split per direction), each ``enc_keys`` reservation mirrored at the
    peer KME over HTTPS. :attr:`master_client` is ``master_sae`` talking to ``kme-a``,
    :attr:`slave_client` is ``slave_sae`` talking to ``kme-b``.

    Parameters
    ----------
    directory
        Where the PKI and the stores go (a temporary directory if ``None``).
    distance_km
        Length of the simulated decoy-BB84 link whose key rate paces the feeder.
    initial_keys
        Keys the master SAE can use at once: the link gets twice as many, since its pool is
        split per direction and ``kme-a`` hands out only the half it owns.
    feed
        Run the feeder (keys then keep arriving at the link's rate).
    master_sae, slave_sae
        The SAE behind ``kme-a`` and the one behind ``kme-b``.

    Raises
    ------
    KmsError
        If a KME does not start.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        distance_km: float = 20.0,
        initial_keys: int = 256,
        feed: bool = True,
        master_sae: str = "sae-a",
        slave_sae: str = "sae-b",
    ) -> None:
        # Imported on use: dev_workdir also serves the in-process pair, which starts no server.
        from qkdtwin.kms.client import KmeClient
        from qkdtwin.kms.devnet import DevNetwork
        from qkdtwin.kms.feeder import link_rate_bps

        self._tmp, self.directory = dev_workdir(directory, initial_keys)
        self.master_sae, self.slave_sae = master_sae, slave_sae
        self.rate_bps = link_rate_bps("decoy-bb84", distance_km)
        self.network = DevNetwork(
            self.directory,
            ["kme-a", "kme-b"],
            [("kme-a", "kme-b")],
            {master_sae: "kme-a", slave_sae: "kme-b"},
            rate_bps=self.rate_bps,
            initial_keys=2 * initial_keys,
            run_feeders=feed,
        )
        self.store_a = self.network.stores["kme-a"]["kme-b"]
        self.store_b = self.network.stores["kme-b"]["kme-a"]
        self._clients: list[KmeClient] = []
        self._closed = False
        try:
            self.network.start()
            self.urls = [self.network.url("kme-a"), self.network.url("kme-b")]
            pki = self.network.pki
            master = KmeClient(self.urls[0], *pki.saes[master_sae], pki.ca_cert)
            slave = KmeClient(self.urls[1], *pki.saes[slave_sae], pki.ca_cert)
            self._clients = [master, slave]
        except BaseException:
            self.close()
            raise
        self.master_client: KmeClient = master
        self.slave_client: KmeClient = slave

    def close(self) -> None:
        """Close the clients, stop both KMEs and the feeder, close the stores (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for c in self._clients:
            c.close()
        self.network.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> DevKmeLink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
