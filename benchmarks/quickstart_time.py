"""The quickstart's wall time against an earlier commit's, back to back on this machine.

    python benchmarks/quickstart_time.py [--baseline 048709b] [--json PATH] [--repeat R]

Checks the baseline out in a temporary git worktree and runs ``python -m unsup3d.quickstart`` of the
baseline and of this checkout one after the other (``--repeat`` alternates them R times), each in a
fresh empty working folder (so each generates its own data and writes its own outputs), in the same
Python environment with ``PYTHONPATH`` set to that side's ``src``; each run checks that it imported
the package from there. ``OMP_NUM_THREADS`` is 1 unless it is set: the README's default, one torch
thread on a CPU-only machine. The time is the whole process, imports and data generation included
(the quickstart "after the install").

Prints both times, their ratio (this checkout over the baseline) and both final mIoU / accuracy as
the quickstarts printed them. ``048709b`` is the code when issue 14 was filed; its quickstart ran the
random-ViT 2D path, today's runs the teacher-free path where no DINO weights are found, so the mIoUs
measure different recipes. ``--json PATH`` writes one object per run (``row``: ``baseline`` or
``current``, ``seed`` 0, ``miou`` and ``acc`` as fractions, ``seconds``, ``commit``); every run is also
appended to ``benchmarks/results/quickstart_time.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_row  # noqa: E402

#: prints where the interpreter imported unsup3d from and stops (exit 3) unless it is under the src
#: the run was given (``QUICKSTART_TIME_SRC``); then runs the quickstart
_RUNNER = (
    "import os, pathlib, sys, unsup3d; "
    "found = pathlib.Path(unsup3d.__file__).resolve(); print('UNSUP3D_FROM', found, flush=True); "
    "found.is_relative_to(pathlib.Path(os.environ['QUICKSTART_TIME_SRC']).resolve()) or sys.exit(3); "
    "import unsup3d.quickstart as q; q.main(sys.argv[1:])"
)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def parse_metrics(output: str) -> tuple[float, float]:
    """The final ``mIoU`` and ``accuracy`` (fractions) of a quickstart's printed table."""
    miou = re.findall(r"^\s*mIoU\s+([0-9.]+)\s*$", output, flags=re.M)
    acc = re.findall(r"^\s*accuracy\s+([0-9.]+)\s*$", output, flags=re.M)
    if not miou or not acc:
        raise ValueError("no mIoU / accuracy table in the quickstart's output")
    return float(miou[-1]) / 100, float(acc[-1]) / 100


def run_quickstart(src: Path, work: Path, log: Path, extra: list[str]) -> tuple[float, str]:
    """``python -m unsup3d.quickstart`` with ``src`` first on the path, in the empty folder ``work``;
    returns (seconds, output). Raises if it failed or imported unsup3d from elsewhere."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("WANDB_SILENT", "true")
    env["QUICKSTART_TIME_SRC"] = str(src)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, *extra], cwd=work, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    log.write_text(output)
    found = re.search(r"^UNSUP3D_FROM (.+)$", proc.stdout, flags=re.M)
    if not found or not Path(found.group(1)).is_relative_to(src.resolve()):
        raise RuntimeError(f"the quickstart imported unsup3d from {found and found.group(1)}, not {src}")
    if proc.returncode != 0:
        raise RuntimeError(f"quickstart from {src} failed (exit {proc.returncode}), see {log}")
    return seconds, output


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="048709b", help="commit to compare against (default: 048709b)")
    p.add_argument("--json", type=Path, default=None, help="write one JSON object per run here")
    p.add_argument("--repeat", type=int, default=1, help="alternate baseline and current this many times")
    p.add_argument(
        "--logs",
        type=Path,
        default=ROOT / "outputs/benchmarks/quickstart_time",
        help="each run's output goes here",
    )
    p.add_argument("extra", nargs="*", help="arguments passed to both quickstarts")
    args = p.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    base_commit = git("rev-parse", args.baseline)
    records: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="quickstart_time_") as tmp:
        tree = Path(tmp) / "baseline"
        git("worktree", "add", "--detach", str(tree), base_commit)
        try:
            sides = {"baseline": tree / "src", "current": ROOT / "src"}
            for rep in range(args.repeat):
                for row, src in sides.items():
                    # this checkout as it is when its run starts (its files may change while the other runs)
                    commit = base_commit if row == "baseline" else git("rev-parse", "HEAD")
                    dirty = row == "current" and bool(git("status", "--porcelain", "--untracked-files=no"))
                    work = Path(tmp) / f"{row}_{rep}"
                    work.mkdir()
                    print(f"--- {row} ({commit[:9]}), run {rep + 1}/{args.repeat}", flush=True)
                    seconds, output = run_quickstart(src, work, args.logs / f"{row}_{rep}.log", args.extra)
                    miou, acc = parse_metrics(output)
                    print(f"    {seconds:.1f} s, mIoU {miou * 100:.2f}, acc {acc * 100:.2f}", flush=True)
                    record = {
                        "row": row,
                        "seed": 0,
                        "repeat": rep,
                        "miou": miou,
                        "acc": acc,
                        "seconds": round(seconds, 2),
                        "commit": commit,
                        "dirty": dirty,
                        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1"),
                    }
                    records.append(record)
        finally:
            git("worktree", "remove", "--force", str(tree))
    for record in records:
        write_row("quickstart_time", record)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in records))
    base = [r["seconds"] for r in records if r["row"] == "baseline"]
    cur = [r["seconds"] for r in records if r["row"] == "current"]
    print(
        f"\nquickstart, {args.repeat} run(s) each, back to back (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', '1')})"
    )
    print(f"{'':10s} {'commit':>10s} {'seconds':>9s} {'mIoU %':>8s} {'acc %':>8s}")
    for r in records:
        print(
            f"{r['row']:10s} {r['commit'][:9]:>10s} {r['seconds']:9.1f} {r['miou'] * 100:8.2f} "
            f"{r['acc'] * 100:8.2f}"
        )
    print(f"ratio current / baseline: {sum(cur) / sum(base):.3f} (summed over runs)")
    return records


if __name__ == "__main__":
    main()
