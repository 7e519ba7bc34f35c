from __future__ import annotations

from pathlib import Path

import qkdtwin.errors
import qkdtwin.kms
from qkdtwin.cli.kms import _load_serve_config
from qkdtwin.kms import KmeConfig

EXAMPLE = Path(__file__).parents[2] / "examples" / "kms-kme-a.yaml"


def test_kms_exports() -> None:
    names = qkdtwin.kms.__all__
    assert names == sorted(names, key=lambda s: (not s.isupper(), s))
    assert set(names) == {
        "RETRY_WINDOW_S",
        "DeliveredKey",
        "KeyStore",
        "KmeConfig",
        "StoredKey",
        "create_app",
    }
    assert qkdtwin.kms.RETRY_WINDOW_S <= 5.0


def test_kms_errors_in_tree() -> None:
    e = qkdtwin.errors
    for cls in (e.KmsRequestError, e.KeyAccessError, e.KeyExhaustedError):
        assert issubclass(cls, e.KmsError)
    assert issubclass(e.KmsError, e.QkdTwinError)


def test_example_config_is_valid() -> None:
    cfg = _load_serve_config(EXAMPLE)
    kme = KmeConfig.model_validate(cfg.kme)
    assert kme.kme_id == "kme-a"
    assert cfg.port == 8443
