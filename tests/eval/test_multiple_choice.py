"""Multiple choice in MMLU's layout: the fixture (two subjects) is read as MMLU's CSVs, prompts follow MMLU's
format, and acc / acc_norm equal the picks of a direct forward over every prompt + choice."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import eva_jax
from eva_jax.eval import multiple_choice as mc
from eva_jax.eval.context import EvalContext
from eva_jax.eval.errors import EvalError
from eva_jax.eval.loglik import encode_pair

FIXTURE = Path(__file__).parent / "fixtures" / "mmlu"


def direct_loglikelihood(cfg, params, ctx, cont, width=256) -> float:
    """One unbatched forward, right-padded to one width (harmless under causal attention: one compile)."""
    assert len(ctx + cont) <= width
    seq = np.zeros((1, width), np.int32)
    seq[0, : len(ctx + cont)] = ctx + cont
    logp = np.asarray(jax.nn.log_softmax(eva_jax.logits(cfg, params, seq)[0], -1), np.float64)
    return float(sum(logp[len(ctx) - 1 + j, t] for j, t in enumerate(cont)))


def test_the_fixture_reads_as_mmlu():
    assert mc.subjects(FIXTURE) == ["tiny_arithmetic", "world_capitals"]
    rows = mc.read_csv(FIXTURE / "test" / "tiny_arithmetic_test.csv")
    assert len(rows) == 4 and rows[3].question == "Which is even: 3, 5, 8 or 9?" and rows[3].answer == 2
    shots = mc.read_csv(FIXTURE / "dev" / "tiny_arithmetic_dev.csv")[:1]
    assert mc.prompt("tiny_arithmetic", shots, rows[0]) == (
        "The following are multiple choice questions (with answers) about tiny arithmetic.\n\n"
        "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "What is 3 + 3?\nA. 5\nB. 6\nC. 7\nD. 8\nAnswer:")


def test_encode_pair_splits_where_the_continuation_starts(tokenizer):
    for context, continuation in [("Answer:", " B"), ("Answer: ", "B"), ("the quick", " brown fox")]:
        ctx, cont = encode_pair(tokenizer, context, continuation)
        assert ctx[0] == tokenizer.bos_id and cont
        assert tokenizer.decode(ctx + cont, skip_special=True) == context + continuation


@pytest.mark.parametrize("choices", ["letter", "text"])
def test_acc_equals_the_picks_of_a_direct_forward(main_model, tokenizer, choices):
    cfg, params = main_model
    ctx = EvalContext(cfg, params, tokenizer, batch=4, shots=1, options={"mmlu_choices": choices},
                      log_samples=True, show_progress=False)
    ctx.data["mmlu"] = str(FIXTURE)
    out = mc.run(ctx)
    assert out["n"] == 7 and out["subjects"]["tiny_arithmetic"]["n"] == 4 and out["choices"] == choices
    picks, picks_norm, answers = [], [], []
    for subject in mc.subjects(FIXTURE):
        dev = mc.read_csv(FIXTURE / "dev" / f"{subject}_dev.csv")[:1]
        for q in mc.read_csv(FIXTURE / "test" / f"{subject}_test.csv"):
            text = mc.prompt(subject, dev, q)
            conts = mc.continuations(q, choices)
            lls = np.array([direct_loglikelihood(cfg, params, *encode_pair(tokenizer, text, c)) for c in conts])
            picks.append(int(np.argmax(lls)))
            picks_norm.append(int(np.argmax(lls / np.array([len(c.strip()) for c in conts]))))
            answers.append(q.answer)
    ours = out["samples"]
    assert [s["pick"] for s in ours] == picks and [s["pick_norm"] for s in ours] == picks_norm
    assert out["acc"] == pytest.approx(np.mean(np.array(picks) == answers))
    assert out["acc_norm"] == pytest.approx(np.mean(np.array(picks_norm) == answers))
    if choices == "letter":  # letters are all one character: normalising changes nothing
        assert out["acc_norm"] == out["acc"]
    else:  # choice texts of different lengths: the two metrics pick differently somewhere
        assert len(set(picks)) > 1 and picks != picks_norm


def test_bad_data_is_a_sentence(tmp_path, tokenizer):
    with pytest.raises(EvalError, match="no such directory"):
        mc.subjects(tmp_path / "nope")
    with pytest.raises(EvalError, match="no test/<subject>_test.csv"):
        mc.subjects(tmp_path)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text("q,a,b,c,d,A\nq,a,b,c,E\n")
    with pytest.raises(EvalError, match="x_test.csv:2 is not an MMLU row"):
        mc.read_csv(tmp_path / "test" / "x_test.csv")
    (tmp_path / "test" / "x_test.csv").write_text("q,a,b,c,d,A\n")
    ctx = EvalContext(None, None, tokenizer, data={"mmlu": str(tmp_path)}, show_progress=False)
    with pytest.raises(EvalError, match="5 shots asked for"):
        mc.run(ctx)
    with pytest.raises(EvalError, match="mmlu needs its data"):
        mc.run(EvalContext(None, None, tokenizer, show_progress=False))
