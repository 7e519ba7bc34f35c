"""Key supply: the feeder with the real link engine + post-processing, and the pool split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qkdtwin.errors import ConfigError
from qkdtwin.kms import KeyStore
from qkdtwin.kms.feeder import LinkFeeder, PipelineKeySource
from qkdtwin.qkd import build_link_model, simulate_link
from qkdtwin.qkd.postprocess import postprocess


def _stores(tmp_path: Path) -> list[KeyStore]:
    return [KeyStore(f"sqlite:///{tmp_path / n}.db") for n in ("a", "b")]


def test_pipeline_source_hands_out_the_post_processed_final_key(tmp_path: Path) -> None:
    """The bytes the feeder stores are the pipeline's own final key (rerun independently)."""
    source = PipelineKeySource("decoy-bb84", 25.0, "boaron2018", pulses_per_block=5_000_000, seed=7)
    stores = _stores(tmp_path)
    feeder = LinkFeeder(stores, 1e6, source=source, owners=("kme-a", "kme-b"))
    assert feeder.push(8) == 8
    # An independent run of the same block with the same seeds gives the same final key.
    model = build_link_model("decoy-bb84", 25.0, "boaron2018")
    res = simulate_link(
        "decoy-bb84", model, 5_000_000, np.random.default_rng([7, 0]), keep_bits=True
    )
    pp = postprocess(res, model, np.random.default_rng([7, 0, 1]))
    expected = np.packbits(pp.alice_key[: 8 * 256]).tobytes()
    a, b = stores
    assert a.available_count() == b.available_count() == 8
    material_a = b"".join(a.raw_material(k) or b"" for k in _ids_in_push_order(a))
    material_b = b"".join(b.raw_material(k) or b"" for k in _ids_in_push_order(b))
    assert material_a == material_b == expected
    # measured rate: final bits over the block's duration at the repetition rate
    assert source.rate_bps == pytest.approx(
        source.final_bits / (5_000_000 / model.repetition_rate_hz)
    )
    assert source.blocks == 1
    for s in stores:
        s.close()


def _ids_in_push_order(store: KeyStore) -> list[str]:
    """Key IDs in the order the feeder cut them from the key stream (alternating owners)."""
    from sqlalchemy import select

    from qkdtwin.kms.store import _keys

    with store.engine.connect() as conn:
        rows = conn.execute(select(_keys.c.key_id, _keys.c.owner, _keys.c.seq)).all()
    own_a = [r.key_id for r in sorted(rows, key=lambda r: r.seq) if r.owner == "kme-a"]
    own_b = [r.key_id for r in sorted(rows, key=lambda r: r.seq) if r.owner == "kme-b"]
    out: list[str] = []
    for i in range(max(len(own_a), len(own_b))):
        out += own_a[i : i + 1] + own_b[i : i + 1]
    return out


def test_split_pool_alternates_owners(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    LinkFeeder(stores, 1e3, owners=("kme-a", "kme-b")).push(10)
    for s in stores:
        assert s.available_count(owner="kme-a") == 5
        assert s.available_count(owner="kme-b") == 5
        assert s.available_count() == 10
        s.close()


def test_pipeline_that_yields_nothing_is_a_config_error() -> None:
    # 1,000 pulses never pass the finite-key bound: no final key, a clear error.
    source = PipelineKeySource("decoy-bb84", 20.0, "gys", pulses_per_block=1_000, seed=1)
    with pytest.raises(ConfigError, match="no final key"):
        source.take(32)
    assert source.blocks == 10
    assert source.discarded_blocks == 10


def test_feeder_needs_two_owners(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="owners"):
        LinkFeeder(_stores(tmp_path), 1e3, owners=("kme-a",))
