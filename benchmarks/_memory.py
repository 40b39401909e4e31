"""Peak memory of a stretch of code, and fresh child processes to measure it in.

``PeakMemory`` reads the resident set's high-water mark. On Linux it resets the kernel's mark
(``VmHWM``) by writing 5 to ``/proc/self/clear_refs``, so one process can measure several phases in
turn, each against the memory it started from. Elsewhere it samples the RSS from a thread with
psutil (which can miss a spike shorter than the interval), and without psutil it falls back on
``getrusage``'s lifetime maximum, which only says something when the phase beats every earlier peak:
run each measurement in a fresh process (``run_child``) so that is the case.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

MB = 1024 * 1024
#: the line a child prints its result after, so stray output (progress bars, warnings) cannot mix in
RESULT_MARK = "@@result@@ "


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def current_rss() -> int:
    """Resident bytes of this process now."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return _maxrss()


def _maxrss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS reports bytes, Linux KiB


class PeakMemory:
    """``with PeakMemory() as m: work()``; then ``m.peak`` (bytes), ``m.baseline`` (RSS at entry),
    ``m.growth`` (peak - baseline), ``m.method`` (how it was read) and, on CUDA, ``m.cuda_peak``."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.baseline = self.peak = 0
        self.cuda_peak: int | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.baseline)

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.baseline = current_rss()
        if _reset_hwm():
            self.method = "VmHWM (clear_refs)"
            return self
        try:
            import psutil
        except ImportError:
            self.method = "ru_maxrss (lifetime peak)"
            return self
        proc = psutil.Process()
        self._sampled = self.baseline

        def sample() -> None:
            while not self._stop.is_set():
                self._sampled = max(self._sampled, int(proc.memory_info().rss))
                time.sleep(self.interval)

        self.method = f"psutil RSS sampled every {self.interval * 1e3:g} ms"
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.cuda_peak = int(torch.cuda.max_memory_allocated())
        if self.method.startswith("VmHWM"):
            self.peak = (_status_kb("VmHWM") or 0) * 1024
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._sampled, current_rss())
        else:
            self.peak = _maxrss()

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline_mb": self.baseline / MB,
            "peak_mb": self.peak / MB,
            "growth_mb": self.growth / MB,
            "cuda_peak_mb": None if self.cuda_peak is None else self.cuda_peak / MB,
            "method": self.method,
        }


def child_result(result: dict[str, Any]) -> None:
    """Print a child's result where ``run_child`` finds it."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_child(script: str | Path, args: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh process and return the dict it passed to ``child_result``.

    A child that fails raises ``RuntimeError`` with the end of its output.
    """
    env = dict(os.environ)
    env.setdefault("TQDM_DISABLE", "1")
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = (proc.stdout + proc.stderr)[-3000:]
    raise RuntimeError(f"{script} {' '.join(args)}: exited {proc.returncode} without a result:\n{tail}")
