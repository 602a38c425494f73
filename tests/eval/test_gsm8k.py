"""GSM8K: answer extraction (strict `#### N`, flexible last number) and exact match after removing commas, `$`
and a trailing period, on fixtures with all of those and negatives; n-shot prompts from the train split; and
generation through the engine, cut at stop strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eva_jax.eval import gsm8k
from eva_jax.eval.context import EvalContext
from eva_jax.eval.errors import EvalError
from eva_jax.eval.generation import cut, fit_prompt, generate_until
from eva_jax.infer.api import generate

FIXTURE = Path(__file__).parent / "fixtures" / "gsm8k"


@pytest.mark.parametrize("completion,strict,flexible", [
    ("1,250 * 2 = 2,500 dollars.\n#### 2,500", "2500", "2500"),
    ("He saves $2,500.\n#### $2,500.", "2500", "2500"),
    ("She ends at -15 meters.\n#### -15", "-15", "-15"),
    ("The answer is -15.", None, "-15"),
    ("3 + 4 = 7, so Tom has 7.", None, "7"),
    ("It costs $1,000,000.00 in all", None, "1000000.00"),
    ("#### 42\nthen 17 more words", "42", "17"),
    ("#### 4.5.", "4.5", "4.5"),
    ("no numbers here...", None, None),
])
def test_extraction(completion, strict, flexible):
    assert gsm8k.strict_answer(completion) == strict
    assert gsm8k.flexible_answer(completion) == flexible


def test_normalisation_and_targets():
    assert gsm8k.normalize(" $1,234. ") == "1234"
    assert gsm8k.normalize("-7") == "-7" and gsm8k.normalize("3.50") == "3.50"
    train, test = gsm8k.load(FIXTURE)
    assert [gsm8k.target(r["answer"]) for r in test] == ["2500", "-15", "4"]
    assert [gsm8k.target(r["answer"]) for r in train] == ["7", "20", "850", "-4"]
    with pytest.raises(EvalError, match="no '#### N'"):
        gsm8k.target("just text")


def test_exact_match_on_the_fixture():
    _, test = gsm8k.load(FIXTURE)
    completions = [
        "Sam saves 1,250 * 2 = $2,500.\n#### $2,500.",  # both right, after removing $, commas and the period
        "She goes down to -15 meters.",  # no #### line: strict misses, flexible finds -15
        "6 - 2 = 4.\n#### 5",  # strict says 5 (wrong); the last number is 5 too
    ]
    out = gsm8k.score(completions, [r["answer"] for r in test])
    assert out["n"] == 3
    assert [s["strict_match"] for s in out["samples"]] == [True, False, False]
    assert [s["flexible_match"] for s in out["samples"]] == [True, True, False]
    assert out["exact_match_strict"] == pytest.approx(1 / 3) and out["exact_match_flexible"] == pytest.approx(2 / 3)


def test_prompts_take_their_shots_from_the_train_split(monkeypatch, tokenizer):
    seen = {}

    def fake_generate(cfg, params, tok, prompts, max_tokens, stop, **kwargs):
        seen.update(prompts=[tok.decode(p, skip_special=True) for p in prompts], stop=stop, max_tokens=max_tokens)
        return ["#### 2,500", "so -15.", "#### 4."]

    monkeypatch.setattr(gsm8k, "generate_until", fake_generate)
    ctx = EvalContext(None, None, tokenizer, shots=2, data={"gsm8k": str(FIXTURE)}, show_progress=False)
    out = gsm8k.run(ctx)
    assert out["exact_match_strict"] == pytest.approx(2 / 3) and out["exact_match_flexible"] == 1.0
    assert out["shots"] == 2 and out["n"] == 3 and "samples" not in out
    train, test = gsm8k.load(FIXTURE)
    shots = gsm8k.shots(train, 2)
    assert shots == gsm8k.shots(train, 2) and all(s in train for s in shots)  # seeded: the same every run
    first = seen["prompts"][0]
    assert first == "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots) + \
        f"Question: {test[0]['question']}\nAnswer:"
    assert seen["stop"] == gsm8k.STOP and seen["max_tokens"] == gsm8k.DEFAULT_MAX_TOKENS
    # A test file alone: shots come from the train.jsonl beside it; too many shots is a sentence.
    assert gsm8k.load(FIXTURE / "test.jsonl")[0] == train
    with pytest.raises(EvalError, match="8 shots asked for, but the train split has 4"):
        gsm8k.run(EvalContext(None, None, tokenizer, data={"gsm8k": str(FIXTURE)}, show_progress=False))


def test_bad_data_is_a_sentence(tmp_path):
    with pytest.raises(EvalError, match="no such file or directory"):
        gsm8k.load(tmp_path / "nope")
    (tmp_path / "test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q"}\n')
    with pytest.raises(EvalError, match="test.jsonl:2 needs the field 'answer'"):
        gsm8k.load(tmp_path)
    (tmp_path / "test.jsonl").write_text("{oops\n")
    with pytest.raises(EvalError, match="test.jsonl:1 is not valid JSON"):
        gsm8k.load(tmp_path)


def test_cut_and_fit():
    assert cut("abc Question: x", ["Question:", "\n\n"]) == ("abc ", True)
    assert cut("a\n\nb Question:", ["Question:", "\n\n"]) == ("a", True)
    assert cut("abc", ["zz"]) == ("abc", False)
    assert fit_prompt([0, 1, 2, 3, 4], 3) == [0, 3, 4] and fit_prompt([0, 1], 3) == [0, 1]


def test_generation_through_the_engine_matches_generate_and_stops(main_model, tokenizer):
    cfg, params = main_model
    prompts = [tokenizer.encode(t) for t in ("the quick brown fox", "to be or not", "hello world")]
    full = generate_until(cfg, params, tokenizer, prompts, 12, batch=4)
    eos = tokenizer.eos_id
    expected = [tokenizer.decode([t for t in out if t != eos])
                for out in generate(cfg, params, prompts, 12, stop_tokens=(eos,))]
    assert full == expected
    text = max(full, key=len)
    assert len(text) >= 4, full
    stop = text[2:4]
    stopped = generate_until(cfg, params, tokenizer, prompts, 12, [stop], batch=4)
    assert stopped == [t[: t.find(stop)] if stop in t else t for t in full]
    with pytest.raises(ValueError, match="max_tokens"):
        generate_until(cfg, params, tokenizer, prompts, 0)


def test_fixture_lines_are_gsm8k_format():
    for name in ("train.jsonl", "test.jsonl"):
        for line in (FIXTURE / name).read_text().splitlines():
            row = json.loads(line)
            assert set(row) == {"question", "answer"} and "\n#### " in row["answer"]
