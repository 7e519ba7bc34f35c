"""Key management service: ETSI GS QKD 014 KMEs with a durable key store.

Recipes: :class:`KeyStore` (the store of one KME), :func:`create_app` (its REST API) and
:class:`KmeConfig` (its settings). See ``docs/kms.md``.
"""

from __future__ import annotations

from qkdtwin.extras import require_extra

require_extra("kms", what="qkdtwin.kms")

from qkdtwin.kms.api import KmeConfig, create_app  # noqa: E402
from qkdtwin.kms.store import RETRY_WINDOW_S, DeliveredKey, KeyStore, StoredKey  # noqa: E402

__all__ = ["RETRY_WINDOW_S", "DeliveredKey", "KeyStore", "KmeConfig", "StoredKey", "create_app"]
