"""Absorbed MLA decode over a paged latent cache (interpret mode): paged == contiguous, ragged lengths, length-1
decode, a partly full last page, several new tokens per sequence (causal), split-K merging, and a poisoned cache:
rows past each length, unused pages and garbage page-table entries hold NaN or point out of range."""

import jax.numpy as jnp
import numpy as np
import pytest

from eva_jax.nn.attention import attention_mask, mla_attention
from pallas_kernels.latent_attention import mla_decode
from pallas_kernels.latent_attention_decode import live_page
from pallas_kernels.latent_attention_ref import mla_decode_ref
from tests.pallas_kernels.helpers import jit

H, C, R, Z, MAX_PAGES = 3, 32, 8, 8, 6  # Z: page size; the cache holds up to 48 positions per sequence


def test_absorbed_reference_equals_naive_mla_per_sequence(check):
    """Reference §2.4: q_nope·k_nope = (q_nope·W_UK)·c, and o·W_UV recovers the per-head value output."""
    b, t, n, v = 2, 2, 5, 7
    lengths = jnp.array([t + 3, 11])
    latent, k_rope = check.normal(b, 11, C), check.normal(b, 11, R)
    w_uk, w_uv = check.normal(C, H, n, scale=0.3), check.normal(C, H, v, scale=0.3)
    q_nope, q_rope = check.normal(b, t, H, n), check.normal(b, t, H, R)

    @jit
    def absorbed(q_nope, q_rope, latent, k_rope):
        q_latent = jnp.einsum("BTHN,CHN->BTHC", q_nope, w_uk)
        return jnp.einsum("BTHC,CHV->BTHV", mla_decode_ref(q_latent, q_rope, latent, k_rope, lengths, 0.2), w_uv)

    out = absorbed(q_nope, q_rope, latent, k_rope)
    for i, s in enumerate(map(int, lengths)):
        @jit
        def naive(q_nope, q_rope, latent, k_rope):
            k_nope = jnp.einsum("SC,CHN->SHN", latent, w_uk)[None]
            values = jnp.einsum("SC,CHV->SHV", latent, w_uv)[None]
            return mla_attention(q_nope, q_rope, k_nope, k_rope, values, attention_mask(t, s, q_offset=s - t), 0.2)

        want = naive(q_nope[i:i + 1], q_rope[i:i + 1], latent[i, :s], k_rope[i:i + 1, :s])
        check.close(out[i:i + 1], want, 1e-5, f"absorbed vs naive, sequence {i}")


def _paged_cache(check, lengths, dtype):
    """A contiguous cache poisoned past each length, the same data scattered over shuffled pages, and its table."""
    b = len(lengths)
    s = MAX_PAGES * Z
    live = np.arange(s)[None, :] < np.asarray(lengths)[:, None]
    latent = np.where(live[..., None], check.normal(b, s, C), np.nan).astype(np.float32)
    rope = np.where(live[..., None], check.normal(b, s, R), np.nan).astype(np.float32)
    n_pages = b * MAX_PAGES + 3
    perm = check.rng.permutation(n_pages)
    table = perm[: b * MAX_PAGES].reshape(b, MAX_PAGES).copy()
    lat_pages = np.full((n_pages, Z, C), np.nan, np.float32)
    rope_pages = np.full((n_pages, Z, R), np.nan, np.float32)
    lat_pages[table] = latent.reshape(b, MAX_PAGES, Z, C)
    rope_pages[table] = rope.reshape(b, MAX_PAGES, Z, R)
    used = -(-np.asarray(lengths) // Z)
    unused = np.arange(MAX_PAGES)[None, :] >= used[:, None]
    # Garbage entries past the last used page: far out of range, or a page full of NaN.
    table = np.where(unused, np.where(check.rng.random(table.shape) < 0.5, 10 ** 6, perm[-1]), table)
    cast = lambda a: jnp.asarray(a).astype(dtype)  # noqa: E731
    return cast(latent), cast(rope), cast(lat_pages), cast(rope_pages), jnp.asarray(table, jnp.int32)


@pytest.mark.parametrize("flavour,t,dtype,splits,tol", [
    ("triton", 1, jnp.float32, 3, 1e-5),  # plain decode; the length-1 sequence sees only itself
    ("mosaic", 3, jnp.float32, 2, 1e-5),  # three new tokens (speculative verification): causal among them
    ("triton", 2, jnp.bfloat16, 1, 2e-2),
])
def test_paged_decode_equals_decode_over_a_contiguous_cache(check, flavour, t, dtype, splits, tol):
    lengths = jnp.asarray([t, 13, 2 * Z, MAX_PAGES * Z - 3], jnp.int32)  # 13: last page partly full
    b = lengths.shape[0]
    latent, rope, lat_pages, rope_pages, table = _paged_cache(check, np.asarray(lengths), dtype)
    q_latent = jnp.asarray(check.normal(b, t, H, C)).astype(dtype)
    q_rope = jnp.asarray(check.normal(b, t, H, R)).astype(dtype)
    scale = 0.15

    @jit
    def run(lat_pages, rope_pages, table):
        return mla_decode(q_latent, q_rope, lat_pages, rope_pages, table, lengths, scale, interpret=True,
                          flavour=flavour, num_splits=splits)

    paged = run(lat_pages, rope_pages, table)
    assert paged.shape == (b, t, H, C) and paged.dtype == dtype
    want = jit(mla_decode_ref, static_argnums=5)(q_latent, q_rope, latent, rope, lengths, scale)
    what = f"{flavour}/{jnp.dtype(dtype).name}/T={t}/splits={splits}"
    check.close(paged.astype(jnp.float32), want.astype(jnp.float32), tol, f"{what}: paged kernel vs contiguous ref")
    # The same cache laid out contiguously (page k of sequence b is page b·M + k) gives the same answer.
    # (Three spare NaN pages keep the page count, hence the compiled kernel, the same.)
    def spare(a):
        return jnp.concatenate([a.reshape(b * MAX_PAGES, Z, -1), jnp.full((3, Z, a.shape[-1]), jnp.nan, dtype)])

    contiguous = run(spare(latent), spare(rope), jnp.arange(b * MAX_PAGES, dtype=jnp.int32).reshape(b, MAX_PAGES))
    check.close(paged.astype(jnp.float32), contiguous.astype(jnp.float32), 1e-6 if dtype == jnp.float32 else 1e-2,
                f"{what}: shuffled pages vs contiguous pages")


def test_tpu_pipeline_only_fetches_live_pages(check):
    """Interpret mode cannot see a DMA of a garbage page (its result is never used), but real hardware would fault:
    every page the Mosaic index map asks for must be one of the sequence's live pages."""
    lengths = np.array([1, 13, 2 * Z, MAX_PAGES * Z])
    table = check.rng.permutation(100)[: 4 * MAX_PAGES].reshape(4, MAX_PAGES)
    used = -(-lengths // Z)
    garbage = np.where(np.arange(MAX_PAGES)[None, :] >= used[:, None], 10 ** 6, table)
    for splits in (1, 4):
        pps = -(-MAX_PAGES // splits)
        for bi in range(4):
            fetched = {int(live_page(bi, s, p, garbage, lengths, page=Z, pages_per_split=pps))
                       for s in range(splits) for p in range(pps)}
            assert fetched == set(table[bi, : used[bi]].tolist()), check.msg(f"sequence {bi}, {splits} splits")
