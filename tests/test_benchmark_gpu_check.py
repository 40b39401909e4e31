"""benchmarks/gpu_check.py on a machine without CUDA: it says so, exits 0 and claims nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_says_so_exits_0_and_writes_nothing(tmp_path: Path) -> None:
    results = ROOT / "benchmarks" / "results" / "gpu_check_cpu_test.jsonl"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--json-name", results.stem],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == gpu_check.NO_CUDA
    assert "no CUDA" in proc.stdout and "nothing was checked" in proc.stdout
    assert not results.exists()  # no rows: nothing is claimed


def test_a_failing_part_is_reported_and_the_rest_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # run_part only touches the CUDA memory counters; on a CPU machine stand them in.
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 3 * 2**20)

    def broken() -> dict:
        raise RuntimeError("index out of range on the GPU")

    rows = [gpu_check.run_part("broken", broken), gpu_check.run_part("fine", lambda: {"ok": True})]
    assert rows[0]["ok"] is False and "RuntimeError: index out of range" in rows[0]["error"]
    assert "index out of range" in gpu_check.detail(rows[0])
    assert rows[1]["ok"] is True and rows[1]["peak_gpu_mb"] == 3.0
