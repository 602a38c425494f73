"""`--dry-run` compiles the real train step for a mesh without allocating it and reports counts, per-device
memory and FLOPs; here on 8 simulated devices with a tiny model (the 671B run is documented in the README)."""

import re

import eva_jax
from eva_jax.counts import param_counts
from eva_jax.train.dry_run import dry_run


def test_dry_run_reports_counts_memory_and_flops_for_the_mesh():
    cfg = eva_jax.load_config("v3_tiny", **{"mesh.data": 2, "mesh.expert": 4, "train.global_batch": 16,
                                            "train.batch_start": 16, "train.micro_batch": 8})
    report = dry_run(cfg, devices=8, hbm_gb=1.0)
    counts = param_counts(cfg)
    assert "mesh data=2 × expert=4" in report or "data=2" in report, report
    total = re.search(r"parameters: ([\d.]+)M total / ([\d.]+)M activated", report)
    assert total, report
    assert abs(float(total.group(1)) * 1e6 - counts["total"]) < 0.01e6
    assert abs(float(total.group(2)) * 1e6 - counts["activated"]) < 0.01e6
    sizes = {name: float(v) for name, v in re.findall(r"^  (\w[\w ]*?)\s+([\d.]+)\s", report, re.M)}
    # ZeRO-1 over 8 ranks: the optimizer state (2 fp32 moments) is spread, so it is well under 2× the params.
    assert 0 < sizes["parameters"] and 0 < sizes["optimizer state"] < 2 * sizes["parameters"]
    assert sizes["temporaries"] > 0 and "per-device memory (MB)" in report and "-> FITS" in report
    flops = re.search(r"FLOPs per device per micro-batch: ([\d.e+]+) model", report)
    assert flops and float(flops.group(1)) > 0
