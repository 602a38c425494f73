"""Packing is exact: the packed row's summed answer loss equals the sum of each sample's own (fp32, 1e-5);
changing one sample leaves the other samples' logits bitwise unchanged; prompt-token predictions get zero
gradient; the row stream resumes from its state and splits every micro-batch between processes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eva_jax.data.pipeline import model_inputs
from eva_jax.nn.model import Transformer
from eva_jax.post.sft import RowStream, SFTData
from eva_jax.post.sft_data import conversation, encode, row_arrays
from eva_jax.train.loss import cross_entropy, target_mask
from tests.post.conftest import sums

ROW = 160


@pytest.fixture(scope="module")
def samples(sft_tokenizer):
    return [encode(sft_tokenizer, conversation(r, "x"), "x") for r in sums(4, 7)]


def logits_of(model, batch):
    cfg, params = model
    net = Transformer(cfg.model, cfg.compute)
    fn = jax.jit(lambda p, t, pos, seg: net.apply({"params": p}, t, positions=pos, segment_ids=seg)["logits"])
    return fn(params, batch["inputs"], batch["positions"], batch["segment_ids"])


def summed_loss(model, arrays):
    batch = model_inputs(arrays, isolate=True)
    mask = target_mask({k: jnp.asarray(v) for k, v in batch.items()})
    return float(cross_entropy(logits_of(model, batch), jnp.asarray(batch["targets"]), mask) * mask.sum())


def test_packed_loss_is_the_sum_of_the_samples_losses(tiny_model, samples):
    packed = summed_loss(tiny_model, row_arrays(samples, [[0, 1, 2, 3]], ROW))
    alone = [summed_loss(tiny_model, row_arrays(samples, [[i]], len(s.ids))) for i, s in enumerate(samples)]
    np.testing.assert_allclose(packed, sum(alone), rtol=1e-5)


def test_changing_one_sample_leaves_the_others_bitwise(tiny_model, samples, sft_tokenizer):
    other = encode(sft_tokenizer, conversation({"prompt": "What is 11 + 11?", "completion": "22"}, "x"), "x")
    base = row_arrays(samples, [[0, 1, 2]], ROW)
    changed = row_arrays([samples[0], other, samples[2]], [[0, 1, 2]], ROW)
    a = np.asarray(logits_of(tiny_model, model_inputs(base, True)))[0]
    b = np.asarray(logits_of(tiny_model, model_inputs(changed, True)))[0]
    n0, n2 = len(samples[0].ids), len(samples[2].ids)
    np.testing.assert_array_equal(a[:n0], b[:n0])
    start_a, start_b = n0 + len(samples[1].ids), n0 + len(other.ids)
    np.testing.assert_array_equal(a[start_a:start_a + n2 - 1], b[start_b:start_b + n2 - 1])
    assert not np.array_equal(a[n0:n0 + 5], b[n0:n0 + 5])


def test_prompt_predictions_get_zero_gradient(tiny_model, samples):
    batch = model_inputs(row_arrays(samples, [[0, 1]], ROW), isolate=True)
    mask = target_mask({k: jnp.asarray(v) for k, v in batch.items()})
    grad = jax.grad(lambda lg: cross_entropy(lg, jnp.asarray(batch["targets"]), mask))(logits_of(tiny_model, batch))
    per_position = np.abs(np.asarray(grad[0])).sum(-1)
    prompt = ~np.asarray(mask[0], bool)
    assert prompt.sum() > 20 and (per_position[prompt] == 0).all() and (per_position[~prompt] > 0).all()


def test_row_stream_resumes_and_splits_between_processes(samples):
    data = SFTData(samples, [[i % 4] for i in range(10)], [], ROW)
    whole = [next(RowStream(data, data.train_rows, 4, 0, 1, False)) for _ in range(1)]
    halves = [next(RowStream(data, data.train_rows, 2, p, 2, False)) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["tokens"] for h in halves]), whole[0]["tokens"])
    stream = RowStream(data, data.train_rows, 4, 0, 1, False)
    first = [next(stream) for _ in range(2)]
    state = stream.get_state()
    later = next(stream)
    again = RowStream(data, data.train_rows, 4, 0, 1, False)
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["tokens"], later["tokens"])
    assert (later["tokens_segment_ids"][2:] == 0).all()  # past the last row: empty rows, no targets
    assert first[0]["tokens"].shape == (4, ROW)
    held = SFTData(samples, [], [[0], [1], [2]], ROW)
    assert len(list(RowStream(held, held.heldout_rows, 2, 0, 1, True))) == 2
