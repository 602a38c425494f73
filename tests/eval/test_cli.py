"""`python -m eva_jax.eval` end to end on a tiny random checkpoint (in-process: the compiles are shared), the
results JSON and the table, and bad input answered with one line and exit status 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import eva_jax
from eva_jax.eval import perplexity
from eva_jax.eval.__main__ import main
from eva_jax.eval.loglik import Scorer

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def checkpoint(main_model, tokenizer, tmp_path_factory):
    cfg, params = main_model
    directory = tmp_path_factory.mktemp("ckpt")
    eva_jax.to_hf(cfg, params, directory, dtype="float32")
    tokenizer.save(directory)
    return directory


def test_the_cli_writes_results_and_prints_a_table(checkpoint, main_model, tokenizer, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    rc = main(["--checkpoint", str(checkpoint), "--tasks", "perplexity,gsm8k,mmlu", "--limit", "2", "--shots", "1",
               "--batch", "4", "--max-tokens", "8", "--out", str(out),
               "--perplexity-data", str(FIXTURES / "perplexity.txt"), "--gsm8k", str(FIXTURES / "gsm8k"),
               "--mmlu", str(FIXTURES / "mmlu")])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    record = json.loads(out.read_text())
    assert set(record) == {"checkpoint", "model", "tasks", "settings", "results", "seconds"}
    assert record["tasks"] == ["perplexity", "gsm8k", "mmlu"] and record["checkpoint"] == str(checkpoint)
    assert record["settings"] == {"limit": 2, "shots": 1, "batch": 4, "max_length": 512, "seed": 0,
                                  "dtype": "float32"}
    res = record["results"]
    assert {"token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "tokens", "words", "bytes",
            "documents"} <= set(res["perplexity"])
    assert {"exact_match_strict", "exact_match_flexible", "n", "shots"} <= set(res["gsm8k"])
    assert res["gsm8k"]["n"] == 2 and res["gsm8k"]["shots"] == 1
    assert {"acc", "acc_norm", "n", "subjects"} <= set(res["mmlu"])
    assert res["mmlu"]["n"] == 4 and set(res["mmlu"]["subjects"]) == {"tiny_arithmetic", "world_capitals"}
    for task in ("gsm8k", "mmlu"):
        for key in ("exact_match_strict", "exact_match_flexible", "acc", "acc_norm"):
            if key in res[task]:
                assert 0.0 <= res[task][key] <= 1.0
    # The numbers are the library's: the same perplexity from the same weights in this process.
    cfg, params = main_model
    text = (FIXTURES / "perplexity.txt").read_text()
    direct = perplexity.evaluate(Scorer(cfg, params, batch_size=4), tokenizer, [text])
    assert res["perplexity"]["token_perplexity"] == pytest.approx(direct["token_perplexity"], rel=1e-5)
    assert math.isfinite(res["perplexity"]["bits_per_byte"])
    # The table names every task's metrics; the progress bar went to stderr.
    lines = printed.out.splitlines()
    assert lines[0].split() == ["task", "metric", "value"]
    assert any(line.split()[:2] == ["mmlu", "acc"] for line in lines)
    assert any(line.split()[:2] == ["gsm8k", "exact_match_strict"] for line in lines)
    assert "perplexity" in printed.err and "mmlu" in printed.err


def bad(args, tmp_path, capsys, match):
    rc = main([*args, "--out", str(tmp_path / "r.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert not (tmp_path / "r.json").exists()


def test_bad_input_gets_one_line(checkpoint, tmp_path, capsys):
    bad(["--checkpoint", str(tmp_path / "missing")], tmp_path, capsys, "is not a directory")
    bad(["--checkpoint", str(checkpoint), "--tasks", "perplexity,squad"], tmp_path, capsys, "unknown task 'squad'")
    bad(["--checkpoint", str(checkpoint), "--tasks", "gsm8k", "--gsm8k", str(tmp_path / "gsm")], tmp_path, capsys,
        "no such file or directory")
    bad(["--checkpoint", str(checkpoint), "--perplexity-data", str(tmp_path / "none.txt")], tmp_path, capsys,
        "no such file or directory")
    # Data is checked for every task before any runs: perplexity does not run when mmlu cannot.
    bad(["--checkpoint", str(checkpoint), "--tasks", "perplexity,mmlu"], tmp_path, capsys, "mmlu needs its data")
    bad(["--checkpoint", str(checkpoint), "--batch", "0"], tmp_path, capsys, "--batch=0")
    # humaneval is wired to eva_jax/eval/humaneval.py; its samples file is checked up front too.
    bad(["--checkpoint", str(checkpoint), "--tasks", "mmlu,humaneval", "--mmlu", str(FIXTURES / "mmlu"),
         "--samples", str(tmp_path / "none.jsonl")], tmp_path, capsys, "no such file")
    bad(["--checkpoint", str(checkpoint), "--tasks", "mmlu", "--mmlu", str(FIXTURES / "mmlu"), "--shots", "9"],
        tmp_path, capsys, "9 shots asked for")
