"""What every benchmark shares: a result row printed and appended to benchmarks/results/<name>.jsonl."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare two rows: host, cores, torch, device."""
    return {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_row(name: str, row: dict[str, Any]) -> Path:
    """Append one JSON row (with a timestamp and the machine) to results/<name>.jsonl and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    full = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **row, "machine": machine()}
    path = RESULTS / f"{name}.jsonl"
    with path.open("a") as f:
        f.write(json.dumps(full) + "\n")
    print(json.dumps(full, indent=2))
    return path


def timeit(fn, *, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds (CUDA synchronised when in use)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def run_cli(subcommand: str, config: Path, args: list[str]) -> Any:
    """``unsup3d SUBCOMMAND --config CONFIG ARGS`` in this process (printed first); returns the CLI."""
    from unsup3d.lightning_cli import Unsup3DCLI

    print(f"--- unsup3d {subcommand} --config {config.name} {' '.join(args)}", flush=True)
    return Unsup3DCLI(args=[subcommand, "--config", str(config), *args])


def val_metrics(cli: Any) -> tuple[float, float]:
    """The run's last ``val/miou`` and ``val/acc`` (fractions)."""
    m = cli.trainer.callback_metrics
    return float(m["val/miou"]), float(m["val/acc"])
