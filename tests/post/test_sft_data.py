"""SFT data: targets are exactly the assistant turns (and the EOS the template closes them with); samples are
packed whole, each once per epoch; the stream's position resumes exactly and processes split every
micro-batch; bad lines are sentences naming the file and the line."""

import json

import numpy as np
import pytest

from eva_jax.data.pipeline import model_inputs
from eva_jax.data.sources import DataError
from eva_jax.data.tokenizer import EOS
from eva_jax.post.sft_data import conversation, encode, pack, read_samples, row_arrays
from tests.post.conftest import sums, write_jsonl


def targets_text(tokenizer, sample):
    return tokenizer.decode(sample.ids[sample.targets].tolist())


def test_prompt_completion_targets_the_answer_and_its_eos(sft_tokenizer):
    row = sums(1)[0]
    sample = encode(sft_tokenizer, conversation(row, "x:1"), "x:1")
    assert targets_text(sft_tokenizer, sample) == row["completion"] + EOS
    assert sample.ids.tolist() == sft_tokenizer.encode_chat(
        [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}],
        add_generation_prompt=False)


def test_every_assistant_turn_is_a_target_and_nothing_else(sft_tokenizer):
    messages = [{"role": "system", "content": "be exact"}, {"role": "user", "content": "What is 12 + 30?"},
                {"role": "assistant", "content": "42"}, {"role": "user", "content": "and 1 + 1?"},
                {"role": "assistant", "content": "2"}, {"role": "user", "content": "thanks"}]
    sample = encode(sft_tokenizer, conversation({"messages": messages}, "x:1"), "x:1")
    assert targets_text(sft_tokenizer, sample) == f"42{EOS}2{EOS}"
    # the trailing user turn teaches nothing and is left out
    assert "thanks" not in sft_tokenizer.decode(sample.ids.tolist())


def test_model_inputs_mask_only_answer_targets(sft_tokenizer):
    samples = [encode(sft_tokenizer, conversation(r, "x"), "x") for r in sums(3)]
    arrays = row_arrays(samples, [[0, 1, 2]], 200)
    batch = model_inputs(arrays, isolate=True)
    counted = batch["target_mask"][0] & (batch["segment_ids"][0] == batch["target_segment_ids"][0])
    assert counted.sum() == sum(s.targets.sum() for s in samples)
    assert set(batch["targets"][0][counted].tolist()) <= set(np.concatenate([s.ids for s in samples]).tolist())


def test_pack_keeps_samples_whole_and_each_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, 300).tolist()
    order = rng.permutation(300)
    rows = pack(lengths, order, 64)
    assert sorted(s for r in rows for s in r) == list(range(300))
    assert all(sum(lengths[s] for s in r) <= 64 for r in rows)
    assert sum(lengths) / (64 * len(rows)) > 0.85  # the window keeps rows nearly full


BAD = [
    ("not json", "{\"prompt\": ", r":2 is not valid JSON"),
    ("no known fields", json.dumps({"question": "q"}), r':2: expected \{"messages"'),
    ("empty answer", json.dumps({"prompt": "q", "completion": "  "}), r":2: there is no assistant answer"),
    ("no assistant", json.dumps({"messages": [{"role": "user", "content": "hi"}]}), r":2: there is no assistant"),
    ("bad role", json.dumps({"messages": [{"role": "robot", "content": "hi"}]}), r":2: message 0 must be"),
    ("too long", json.dumps({"prompt": "x " * 400, "completion": "y"}), r":2: the conversation is \d+ tokens"),
]


@pytest.mark.parametrize("name,line,message", BAD, ids=[b[0] for b in BAD])
def test_bad_lines_are_named(sft_tokenizer, tmp_path, name, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(sums(1)[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=rf"{path}{message}"):
        read_samples(path, sft_tokenizer, 129)


def test_a_file_of_conversations_reads_whole(sft_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", sums(10))
    assert len(read_samples(path, sft_tokenizer, 129)) == 10
