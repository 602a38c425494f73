"""Latent cache: accounting, paged writes and reads, the page pool."""

import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.infer import cache
from eva_jax.nn import kv_cache


def test_v3_caches_1152_bytes_per_token_per_layer_71x_less_than_mha():
    acc = cache.accounting(eva_jax.load_config("v3_671b").model)
    assert acc.latent_bytes == 2 * (512 + 64) == 1152
    assert acc.mha_bytes == 2 * 128 * (192 + 128) == 81920
    assert round(acc.ratio, 1) == 71.1
    assert acc.latent_bytes * acc.layers == 70_272  # reference §2.4: 68.6 KiB per token over 61 layers
    assert "1,152 B per token per layer" in acc.lines()[0]


def test_paged_write_then_read_in_position_order():
    cfg = eva_jax.load_config("v3_tiny").model
    pool = cache.init_pool(cfg, num_pages=6, page_size=4, dtype="float32")
    assert len(pool) == cfg.num_layers + cfg.num_mtp_layers
    assert pool[0].latent.shape == (7, 4, 32) and pool[0].rope.shape == (7, 4, 8)
    table = np.array([[5, 2, 3], [1, 0, 0]], np.int32)  # row 0 holds pages out of order
    latent = np.arange(2 * 10 * 32, dtype=np.float32).reshape(2, 10, 32)
    rope = -np.arange(2 * 10 * 8, dtype=np.float32).reshape(2, 10, 8) - 1
    positions = np.broadcast_to(np.arange(10), (2, 10))
    valid = np.array([[True] * 10, [True] * 3 + [False] * 7])
    pages = kv_cache.write(pool[1], *map(jnp.asarray, (latent, rope, positions, valid, table)))
    got_latent, got_rope = (np.asarray(a) for a in kv_cache.read(pages, jnp.asarray(table)))
    np.testing.assert_array_equal(got_latent[0, :10], latent[0])
    np.testing.assert_array_equal(got_rope[0, :10], rope[0])
    np.testing.assert_array_equal(got_latent[1, :3], latent[1, :3])
    assert not np.asarray(pages.latent[4]).any()  # a page nobody holds stays untouched
    assert np.asarray(pages.rope[0]).any()  # padding went to the trash page


def test_page_pool_hands_out_and_takes_back():
    pool = cache.PagePool(4)
    a = pool.allocate(3)
    assert sorted(a) == [1, 2, 3] and pool.free == 1
    with pytest.raises(cache.PoolExhausted):
        pool.allocate(2)
    pool.release(a)
    assert pool.free == 4
    with pytest.raises(ValueError, match="returned twice"):
        pool.release(a[:1])
