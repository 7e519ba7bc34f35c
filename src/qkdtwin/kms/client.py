"""Clients of a KME over mutual TLS (httpx): :class:`KmeClient` and :class:`OperatorClient`.

:class:`KmeClient` is the ETSI GS QKD 014 client of an SAE; :class:`OperatorClient` reads the
operator interface (``GET /kme/v1/links``, :mod:`qkdtwin.kms.operator`) with an operator
certificate.

Example (needs a running KME)::

    with KmeClient("https://127.0.0.1:8443", cert, key, ca) as kme:
        keys = kme.get_keys("sae-b", number=2)              # master side
        same = other.get_keys_with_ids("sae-a", [k.key_id for k in keys])   # slave side

    with OperatorClient("https://127.0.0.1:8443", op_cert, op_key, ca) as op:
        consumed = op.links().links[0].delivered_total
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

import httpx
from pydantic import ValidationError

from qkdtwin.errors import (
    ConfigError,
    KeyAccessError,
    KmsError,
)
from qkdtwin.kms.etsi_errors import error_class
from qkdtwin.kms.operator import LINKS_PATH, KmeLinksResponse
from qkdtwin.kms.store import DeliveredKey

__all__ = ["KmeClient", "KmeUnreachableError", "OperatorClient"]


class EtsiStatus(TypedDict):
    """The ETSI GS QKD 014 Status object as a KME sends it (:class:`qkdtwin.kms.api.Status`).

    ``status_extension`` is left out when the KME has none.
    """

    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_SAE_ID_count: int
    # the standard's free-form extension object
    status_extension: NotRequired[dict[str, Any]]


class LinkStateAnswer(TypedDict):
    """Answer of ``POST /kme/v1/links/{peer}/state``: the link's state now.

    The KME's :class:`~qkdtwin.kms.operator.LinkStateResponse`.
    """

    kme_id: str
    peer: str
    enabled: bool


class RouteStateAnswer(TypedDict):
    """Answer of ``POST /kme/v1/network/{a}/{b}/state``.

    The KME's :class:`~qkdtwin.kms.operator.RouteStateResponse`.
    """

    kme_id: str
    link: str
    enabled: bool


class DiscardAnswer(TypedDict):
    """Answer of ``POST /kme/v1/links/{peer}/discard``: the keys erased.

    The KME's :class:`~qkdtwin.kms.operator.DiscardResponse`.
    """

    kme_id: str
    peer: str
    since: float
    discarded: int


class RelayQuotaInfo(TypedDict):
    """One relay quota as a KME reports it (:class:`~qkdtwin.kms.operator.RelayQuotaView`)."""

    destination: str
    keys_per_s: float
    burst: int
    tokens: float
    granted_keys: int
    refused_requests: int


class RelayQuotaAnswer(TypedDict):
    """Answer of ``POST /kme/v1/relays/{destination}/quota`` (``quota``: ``None`` once removed)."""

    kme_id: str
    destination: str
    quota: RelayQuotaInfo | None


class KmeClient:
    """Client of one KME, authenticated by the SAE's certificate.

    Parameters
    ----------
    base_url
        ``https://host:port`` of the KME.
    cert, key
        The SAE's certificate and private key (PEM).
    ca
        The CA bundle that signed the KME's certificate.
    timeout_s
        Per-request timeout.

    Raises
    ------
    KmsError
        From every method: the KME's ETSI Error (400: :class:`KmsRequestError`, 401:
        :class:`KeyAccessError`, 503: :class:`KeyExhaustedError`), or a transport failure
        (including a refused TLS handshake) as a plain :class:`KmsError`.
    """

    def __init__(
        self, base_url: str, cert: Path, key: Path, ca: Path, *, timeout_s: float = 10.0
    ) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
        self._http = httpx.Client(base_url=base_url, verify=ctx, timeout=timeout_s)

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise KmsError(f"cannot reach KME: {exc}") from exc
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code != 200:
            cls = error_class(r.status_code, KmsError)
            message = body.get("message") if isinstance(body, dict) else None
            details = body.get("details") if isinstance(body, dict) else None
            raise cls(
                f"KME answered {r.status_code}: {message or r.reason_phrase}",
                details=details if isinstance(details, list) else None,
            )
        return dict(body)

    @staticmethod
    def _keys(body: dict[str, Any]) -> list[DeliveredKey]:
        return [DeliveredKey(k["key_ID"], base64.b64decode(k["key"])) for k in body["keys"]]

    def status(self, slave_sae_id: str) -> EtsiStatus:
        """Return the ETSI Status object of the pool shared with ``slave_sae_id``."""
        return cast(EtsiStatus, self._call("GET", f"/api/v1/keys/{slave_sae_id}/status"))

    def get_keys(
        self,
        slave_sae_id: str,
        number: int = 1,
        size: int | None = None,
        additional_slave_sae_ids: Sequence[str] = (),
    ) -> list[DeliveredKey]:
        """Get new keys as master SAE (``POST enc_keys``)."""
        body: dict[str, Any] = {"number": number}
        if size is not None:
            body["size"] = size
        if additional_slave_sae_ids:
            body["additional_slave_SAE_IDs"] = list(additional_slave_sae_ids)
        return self._keys(self._call("POST", f"/api/v1/keys/{slave_sae_id}/enc_keys", json=body))

    def get_keys_with_ids(self, master_sae_id: str, key_ids: Sequence[str]) -> list[DeliveredKey]:
        """Get the keys with these IDs as slave SAE (``POST dec_keys``)."""
        body = {"key_IDs": [{"key_ID": k} for k in key_ids]}
        return self._keys(self._call("POST", f"/api/v1/keys/{master_sae_id}/dec_keys", json=body))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> KmeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class KmeUnreachableError(KmsError):
    """A KME could not be reached: connection refused, timeout, or a failed TLS handshake.

    ``url`` is the URL that was called.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message, details=[{"url": url}])
        self.url = url


class OperatorClient:
    """Client of a KME's operator interface, authenticated by an operator certificate.

    Parameters
    ----------
    base_url
        ``https://host:port`` of the KME.
    cert, key
        The operator's certificate (SAN URI ``urn:qkdtwin:operator:<ID>``) and key (PEM).
    ca
        The CA bundle that signed the KME's certificate.
    timeout_s
        Per-request timeout (connect, read, write).

    Raises
    ------
    ConfigError
        If the certificate, key or CA cannot be loaded.
    """

    def __init__(
        self, base_url: str, cert: Path, key: Path, ca: Path, *, timeout_s: float = 5.0
    ) -> None:
        try:
            ctx = ssl.create_default_context(cafile=str(ca))
            ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load operator TLS files: {exc}", field="cert") from exc
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, verify=ctx, timeout=timeout_s)

    def links(self) -> KmeLinksResponse:
        """Return the KME's key counts per QKD link (``GET /kme/v1/links``).

        Raises
        ------
        KmeUnreachableError
            Connection refused or reset, timeout, or TLS failure (the KME's certificate is
            not from ``ca``, or the KME refused this certificate).
        KeyAccessError
            The KME answered 401: the certificate is not an operator certificate.
        KmsError
            Any other status, or a body that is not a links response.

        Every message names the URL called.
        """
        url = self.base_url + LINKS_PATH
        r = self._request("GET", LINKS_PATH)
        try:
            return KmeLinksResponse.model_validate_json(r.content)
        except ValidationError as exc:
            raise KmsError(
                f"KME at {url} sent a malformed links response: {exc.errors()[0]['msg']}",
                details=[{"url": url}],
            ) from exc

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call to the operator interface; every failure as :meth:`links` documents."""
        url = self.base_url + path
        try:
            r = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            kind = type(exc).__name__
            raise KmeUnreachableError(f"cannot reach KME at {url}: {kind}: {exc}", url=url) from exc
        if r.status_code == 401:
            raise KeyAccessError(
                f"KME at {url} refused this certificate (401): not an operator certificate",
                details=[{"url": url}],
            )
        if r.status_code != 200:
            try:
                msg = str(r.json().get("message", ""))
            except (ValueError, AttributeError):
                msg = ""
            raise KmsError(
                f"KME at {url} answered {r.status_code} {r.reason_phrase}"
                + (f": {msg}" if msg else ""),
                details=[{"url": url}],
            )
        return r

    # The public methods cast the KME's JSON answer to the TypedDict of the operator
    # interface's response model for that path (qkdtwin.kms.operator); it is not re-validated.
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", path, body).json())

    def set_link_state(self, peer: str, enabled: bool) -> LinkStateAnswer:
        """Stop (``False``) or resume key delivery and relaying over the link to ``peer``.

        ``POST /kme/v1/links/{peer}/state``; returns the KME's answer (``enabled``, ``at``).

        Raises
        ------
        KmeUnreachableError, KeyAccessError, KmsError
            As :meth:`links`.
        """
        answer = self._post(f"{LINKS_PATH}/{peer}/state", {"enabled": bool(enabled)})
        return cast(LinkStateAnswer, answer)

    def set_route_state(self, a: str, b: str, enabled: bool) -> RouteStateAnswer:
        """Stop (``False``) or allow this KME's relays over the link ``a``-``b``.

        ``POST /kme/v1/network/{a}/{b}/state``.

        Raises
        ------
        KmeUnreachableError, KeyAccessError, KmsError
            As :meth:`links`.
        """
        answer = self._post(f"/kme/v1/network/{a}/{b}/state", {"enabled": bool(enabled)})
        return cast(RouteStateAnswer, answer)

    def discard_since(self, peer: str, since: float) -> DiscardAnswer:
        """Erase the link's available keys added at or after ``since`` (Unix s).

        ``POST /kme/v1/links/{peer}/discard``; returns the KME's answer (``discarded``).

        Raises
        ------
        KmeUnreachableError, KeyAccessError, KmsError
            As :meth:`links`.
        """
        answer = self._post(f"{LINKS_PATH}/{peer}/discard", {"since": float(since)})
        return cast(DiscardAnswer, answer)

    def set_relay_quota(
        self, destination: str, keys_per_s: float | None, burst: int | None = None
    ) -> RelayQuotaAnswer:
        """Limit the keys this KME relays toward ``destination`` (``None``: no limit).

        ``POST /kme/v1/relays/{destination}/quota``; returns the KME's answer (``quota``:
        rate, burst, tokens, counts; ``None`` once removed).

        Raises
        ------
        KmeUnreachableError, KeyAccessError, KmsError
            As :meth:`links`.
        """
        body: dict[str, Any] = {"keys_per_s": None if keys_per_s is None else float(keys_per_s)}
        if burst is not None:
            body["burst"] = int(burst)
        return cast(RelayQuotaAnswer, self._post(f"/kme/v1/relays/{destination}/quota", body))

    def relay_quotas(self) -> list[RelayQuotaInfo]:
        """Return this KME's relay quotas (``GET /kme/v1/relays/quotas``).

        Raises
        ------
        KmeUnreachableError, KeyAccessError, KmsError
            As :meth:`links`.
        """
        quotas = list(self._request("GET", "/kme/v1/relays/quotas").json()["quotas"])
        return cast(list[RelayQuotaInfo], quotas)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
