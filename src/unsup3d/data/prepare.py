"""Running preparation jobs: in parallel, with a progress bar, each one's output written atomically,
jobs whose output exists skipped, and a job that meets a degenerate scene warned about and skipped.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Job:
    """``fn(*args)`` writes ``output`` (atomically); ``name`` is what a warning calls it."""

    name: str
    output: Path
    fn: Callable[..., Any]
    args: tuple = field(default_factory=tuple)


def _run(job: Job) -> tuple[str, str | None]:
    try:
        job.fn(*job.args)
    except ValueError as e:  # a degenerate input: skip it, keep the rest
        return job.name, str(e)
    return job.name, None


def run_jobs(jobs: Sequence[Job], workers: int = 1, desc: str = "preparing") -> list[str]:
    """Run the jobs whose output does not exist yet; return the names of those skipped as unusable.

    ``workers > 1`` runs them in that many processes. Errors other than ``ValueError`` (a missing
    file, a bug) stop the preparation: what was finished stays, and a rerun resumes.
    """
    todo = [j for j in jobs if not j.output.exists()]
    skipped: list[str] = []
    if not todo:
        return skipped
    bar = tqdm(total=len(todo), desc=desc, unit="item", dynamic_ncols=True)
    try:
        if workers <= 1:
            results = (_run(j) for j in todo)
            for name, problem in results:
                _note(name, problem, skipped)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for fut in as_completed([pool.submit(_run, j) for j in todo]):
                    _note(*fut.result(), skipped)
                    bar.update()
    finally:
        bar.close()
    return skipped


def _note(name: str, problem: str | None, skipped: list[str]) -> None:
    if problem is not None:
        warnings.warn(f"skipping {name}: {problem}", stacklevel=3)
        skipped.append(name)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def save_npy_atomic(path: Path, array: Any) -> None:
    """``numpy.save`` through a temporary file and a rename (no pickles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy"
    np.save(tmp, array, allow_pickle=False)
    os.replace(tmp, path)
