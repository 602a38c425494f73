"""GRPO prompts: text (chat or raw), messages and GSM8K lines; bad lines named by file and line; the batches of
prompts a pure function of the step, every training prompt once per epoch."""

import json
from pathlib import Path

import pytest

import eva_jax
from eva_jax.data.sources import DataError
from eva_jax.post.grpo_data import GSM8K_INSTRUCTION, batch_of_prompts, read_prompts, split
from tests.post.conftest import TINY, write_jsonl

GSM8K = Path(__file__).resolve().parent.parent / "eval" / "fixtures" / "gsm8k" / "test.jsonl"


def config(**sets):
    return eva_jax.load_config("v3_tiny", **{**TINY, "train.seq_len": 64, "grpo.max_new_tokens": 16, **sets})


def test_prompt_forms(tmp_path, sft_tokenizer):
    tok = sft_tokenizer
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 2 + 3?"}]
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is 2 + 3?", "answer": "5"},
                                             {"prompt": messages, "answer": 5},
                                             {"messages": messages, "answer": "5"}])
    chat = read_prompts(path, tok, config())
    assert chat[0].ids == tuple(tok.encode_chat([{"role": "user", "content": "What is 2 + 3?"}]))
    assert chat[1].ids == chat[2].ids == tuple(tok.encode_chat(messages)) and chat[1].answer == "5"
    assert [p.line for p in chat] == [1, 2, 3]
    raw = read_prompts(path, tok, config(**{"grpo.prompt_format": "raw"}))
    assert raw[0].ids == tuple(tok.encode("What is 2 + 3?")) and raw[1].ids == chat[1].ids


def test_gsm8k_lines_ask_for_the_answer_form(sft_tokenizer):
    prompts = read_prompts(GSM8K, sft_tokenizer, config(**{"train.seq_len": 256}))
    first = json.loads(GSM8K.read_text().splitlines()[0])
    content = first["question"] + GSM8K_INSTRUCTION
    assert prompts[0].ids == tuple(sft_tokenizer.encode_chat([{"role": "user", "content": content}]))
    assert prompts[0].answer == first["answer"]


@pytest.mark.parametrize("line,message", [
    ("not json", "p.jsonl:2 is not valid JSON"),
    ('{"prompt": "hi"}', "p.jsonl:2.*answer"),
    ('{"prompt": "hi", "answer": "  "}', "p.jsonl:2: the answer is empty"),
    ('{"answer": "1"}', "p.jsonl:2: expected"),
    ('{"prompt": "", "answer": "1"}', "p.jsonl:2: the prompt is empty"),
    ('{"prompt": [{"role": "robot", "content": "x"}], "answer": "1"}', "p.jsonl:2: message 0"),
    ('{"prompt": "' + "word " * 200 + '", "answer": "1"}', "p.jsonl:2: the prompt is .* tokens; with "
                                                           "grpo.max_new_tokens=16"),
])
def test_bad_lines_are_named(tmp_path, sft_tokenizer, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine", "answer": "1"}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        read_prompts(path, sft_tokenizer, config())


def test_batches_are_a_pure_function_of_the_step_covering_each_epoch(tmp_path, sft_tokenizer):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "answer": str(i)} for i in range(12)])
    train, held = split(read_prompts(path, sft_tokenizer, config()), 2, seed=0)
    assert len(train) == 10 and len(held) == 2 and not {p.line for p in train} & {p.line for p in held}
    epoch = [p.line for step in range(5) for p in batch_of_prompts(train, step, 2, seed=0)]
    assert sorted(epoch) == sorted(p.line for p in train)
    assert [p.line for p in batch_of_prompts(train, 7, 2, seed=0)] == [p.line for p in batch_of_prompts(train, 7, 2, 0)]
    with pytest.raises(DataError, match="leaves none of the 12 prompts"):
        split(read_prompts(path, sft_tokenizer, config()), 12, seed=0)
