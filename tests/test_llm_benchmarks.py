"""The GPU scripts (benchmarks/gpu_check.py, benchmarks/llm_step.py) run at toy size on a CPU,
so they do not rot between the runs on a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_script_runs_every_check_at_toy_size(tmp_path):
    script = BENCHMARKS / "gpu_check.py"
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--cpu-smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = ("large", "small_t4", "log_probs", "generation", "sampler", "token_engine")
    assert all(name in report and "error" not in report[name] for name in checks)
    assert report["log_probs"]["largest_difference"] < 1e-4
    assert report["sampler"]["largest_difference"] < 1e-4
    assert len(report["sampler"]["prompt_lengths"]) > 1  # left padding of mixed lengths
    assert report["provenance"]["git_commit"]


def test_gpu_benchmark_script_runs_on_a_toy_shape():
    """benchmarks/llm_step.py is a GPU check; its --tiny mode keeps it from rotting on CPU."""
    script = BENCHMARKS / "llm_step.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--tiny", "--steps", "2", "--max-new-tokens", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    for loss in ("tpo", "grpo_per_token"):
        assert report[loss]["seconds_per_step"] > 0 and report[loss]["loss_seconds"] > 0
        assert report[loss]["generation_tokens_per_second"] > 0
    assert "tpo_loss_overhead_share_of_step" in report
