"""One command that checks unsup3d on a CUDA machine, sized to finish within 8 minutes on one H100.

    python benchmarks/gpu_check.py [--json-name gpu_check] [--skip-svc]

Parts, each on its own (a failure is reported with its error and the others still run):

1. ``tests``: the ``gpu``-marked tests (``pytest -m gpu``), their pass / fail / skip counts.
2. ``step:<model>:<precision>``: one training step (forward, a fixed loss, backward) of MinkUNet
   (STSSL's backbone) and Res16UNet (PointDC's) on a real KITTI frame from ``samples/``, on CUDA in
   fp32 and under bf16 autocast, against the same step on the CPU from the same weights: the loss's
   relative difference, and the gradients' relative difference and cosine over all parameters.
3. ``svc_quickstart``: ``experiments/quickstart/pointdc_svc.yaml`` through the CLI on the GPU
   (``--trainer.accelerator gpu --trainer.logger false``, in a temporary folder) and its validation
   mIoU.

Every part reports its wall time and peak GPU memory (``torch.cuda.max_memory_allocated``). The script
prints a table and appends one JSON row per part to ``benchmarks/results/<json-name>.jsonl``. It needs
only torch, Lightning and the package's own dependencies: no faiss-gpu, no spconv, no torchsparse
(whichever of those is installed is used and named in the rows). Without CUDA it says so and exits 0
without running or writing anything. Exit status 1 when any part failed.

Written without a GPU at hand: its parts were run here with the CPU standing in for CUDA (the steps
and the SVC recipe work; CPU against CPU agrees exactly), not yet on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "src"):  # a checkout without `pip install -e .` works too
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from benchmarks._common import write_row  # noqa: E402

KITTI_FRAME = ROOT / "samples/semantickitti_seq00/sequences/00/velodyne/000000.bin"
SVC_CONFIG = ROOT / "experiments/quickstart/pointdc_svc.yaml"
NO_CUDA = "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was checked."

# Pass marks of a training step against the CPU: fp32 should agree to rounding (index_add_ on CUDA
# adds in any order); bf16 keeps 8 mantissa bits, so only the direction of the gradient is held to it.
LIMITS = {
    "fp32": {"loss_rel": 1e-4, "grad_rel": 1e-3, "grad_cos": 0.99999},
    "bf16": {"loss_rel": 5e-2, "grad_rel": None, "grad_cos": 0.95},
}


# -- parts ------------------------------------------------------------------------------------------


def gpu_tests(timeout: float) -> dict[str, Any]:
    """Run ``pytest -m gpu`` in a subprocess; counts of passed / failed / skipped / errors."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", "-rfEs", str(ROOT / "tests")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    tail = proc.stdout.strip().splitlines()
    summary = tail[-1] if tail else proc.stderr.strip()[-300:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    problems = [line for line in tail if line.startswith(("FAILED", "ERROR"))]
    ok = proc.returncode == 0 and counts.get("passed", 0) > 0
    return {"ok": ok, "returncode": proc.returncode, "summary": summary, "counts": counts,
            "problems": problems[:20], "skipped": [line for line in tail if line.startswith("SKIPPED")][:20]}


def kitti_batch(crop: float, voxel: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel coordinates (batch 0) and (x, y, z, intensity) of the first sample KITTI frame, cropped to
    ``|x|, |y| < crop`` metres."""
    from unsup3d.data.formats.semantic_kitti import read_scan
    from unsup3d.sparse import sparse_quantize

    scan = read_scan(KITTI_FRAME)
    scan = scan[(np.abs(scan[:, 0]) < crop) & (np.abs(scan[:, 1]) < crop)]
    coords, index = sparse_quantize(scan[:, :3], voxel, return_index=True)
    coords = torch.from_numpy(np.asarray(coords)).int()
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], dim=1)
    return coords, torch.from_numpy(scan[index]).float()


def make_model(name: str) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The backbone, and the map from (x, y, z, intensity) to its input features."""
    from unsup3d.models import MinkUNet, Res16UNet

    torch.manual_seed(0)
    if name == "minkunet":
        return MinkUNet(in_channels=4), lambda f: f
    # PointDC's input is xyz + rgb: the intensity stands in for the three colours.
    return Res16UNet(in_channels=6, width=0.5), lambda f: torch.cat([f, f[:, 3:4], f[:, 3:4]], dim=1)


def train_step(model: torch.nn.Module, coords: torch.Tensor, feats: torch.Tensor, target: torch.Tensor,
               device: str, bf16: bool) -> tuple[float, torch.Tensor, float]:
    """Loss, flat gradient (float64, on the CPU) and seconds of one forward + backward on ``device``."""
    from unsup3d.sparse import SparseTensor

    model = model.to(device).train()
    model.zero_grad(set_to_none=True)
    x = SparseTensor(feats.to(device), coords.to(device))
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    loss = torch.nn.functional.mse_loss(out.float(), target.to(device))
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    grads = [p.grad.detach().double().flatten().cpu() for p in model.parameters() if p.grad is not None]
    return loss.item(), torch.cat(grads), seconds


def step_checks(name: str, crop: float) -> list[tuple[str, Callable[[], dict]]]:
    """The CPU reference step of ``name`` (computed once, lazily) and a check per CUDA precision."""
    cache: dict[str, Any] = {}

    def reference() -> dict:
        if not cache:
            model, to_input = make_model(name)
            coords, raw = kitti_batch(crop)
            feats = to_input(raw)
            width = model.out_channels
            target = torch.randn(coords.shape[0], width, generator=torch.Generator().manual_seed(1))
            state = copy.deepcopy(model.state_dict())
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the sparse conv's many small ops run best on one CPU thread
            try:
                loss, grad, seconds = train_step(model, coords, feats, target, "cpu", bf16=False)
            finally:
                torch.set_num_threads(threads)
            cache.update(model=model, state=state, coords=coords, feats=feats, target=target,
                         loss=loss, grad=grad, seconds=seconds)
        return cache

    def check(precision: str) -> Callable[[], dict]:
        def run() -> dict:
            ref = reference()
            model, _ = make_model(name)
            model.load_state_dict(ref["state"])
            bf16 = precision == "bf16"
            matmul = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("highest")  # fp32 means fp32 here, not TF32
            try:
                batch = (ref["coords"], ref["feats"], ref["target"])
                train_step(model, *batch, "cuda", bf16)  # warm-up
                model.load_state_dict(ref["state"])  # BN running stats moved in the warm-up
                loss, grad, seconds = train_step(model, *batch, "cuda", bf16)
            finally:
                torch.set_float32_matmul_precision(matmul)
            loss_rel = abs(loss - ref["loss"]) / abs(ref["loss"])
            grad_rel = float((grad - ref["grad"]).norm() / ref["grad"].norm())
            grad_cos = float(torch.nn.functional.cosine_similarity(grad, ref["grad"], dim=0))
            limits = LIMITS[precision]
            ok = loss_rel <= limits["loss_rel"] and grad_cos >= limits["grad_cos"] and (
                limits["grad_rel"] is None or grad_rel <= limits["grad_rel"])
            return {"ok": ok, "voxels": int(ref["coords"].shape[0]), "loss_cpu": ref["loss"],
                    "loss_cuda": loss, "loss_rel": loss_rel, "grad_rel": grad_rel, "grad_cos": grad_cos,
                    "limits": limits, "cpu_step_s": ref["seconds"], "cuda_step_s": seconds,
                    "cpu_threads": torch.get_num_threads()}

        return run

    return [(f"step:{name}:{p}", check(p)) for p in ("fp32", "bf16")]


def svc_quickstart() -> dict:
    """The quickstart SVC recipe through the CLI on the GPU, in a temporary folder; its val/miou."""
    from unsup3d.lightning_cli import Unsup3DCLI

    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="unsup3d_gpu_check_") as tmp:
        os.chdir(tmp)  # the recipe's relative data/ and outputs/ land here
        try:
            cli = Unsup3DCLI(args=["fit", "--config", str(SVC_CONFIG), "--trainer.accelerator", "gpu",
                                   "--trainer.devices", "1", "--trainer.logger", "false"])
        finally:
            os.chdir(here)
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    miou = metrics.get("val/miou")
    return {"ok": miou is not None and 0.0 <= miou <= 1.0, "miou": miou, "acc": metrics.get("val/acc"),
            "epochs": int(cli.trainer.current_epoch)}


# -- running and reporting --------------------------------------------------------------------------


def installed() -> dict[str, Any]:
    """Which optional engines this run could use (the rows name them)."""
    from unsup3d.sparse import backend
    from unsup3d.sparse.spconv_adapter import spconv_cuda_available

    return {"torchsparse": backend.torchsparse_available(), "spconv_cuda": spconv_cuda_available(),
            "torch_cuda": torch.version.cuda}


def run_part(name: str, fn: Callable[[], dict]) -> dict:
    """``fn()`` with its time and peak GPU memory; an exception becomes a failed row with its error."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        row = fn()
    except Exception as exc:  # reported, never hidden: the next part still runs
        row = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(limit=8)[-2000:]}
    row = {"part": name, **row, "seconds": time.perf_counter() - t0,
           "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}
    status = "ok" if row["ok"] else "FAILED"
    print(f"[gpu_check] {name}: {status} in {row['seconds']:.1f} s", flush=True)
    return row


def detail(row: dict) -> str:
    """One line of what a part measured."""
    if "error" in row:
        return row["error"][:100]
    if row["part"] == "tests":
        return row["summary"][:100]
    if row["part"].startswith("step:"):
        return (
            f"{row['voxels']} voxels, loss rel {row['loss_rel']:.1e}, grad rel {row['grad_rel']:.1e}, "
            f"cos {row['grad_cos']:.6f}; step CPU {row['cpu_step_s']:.2f} s, CUDA {row['cuda_step_s']:.3f} s"
        )
    if row["part"] == "svc_quickstart":
        return f"val/miou {row['miou']:.3f}, val/acc {row['acc']:.3f} after {row['epochs']} epochs"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json-name", default="gpu_check", help="rows go to benchmarks/results/<name>.jsonl")
    parser.add_argument("--crop", type=float, default=20.0, help="half-side (m) of the KITTI crop stepped")
    parser.add_argument("--test-timeout", type=float, default=240.0, help="seconds for the gpu tests")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-svc", action="store_true")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0

    parts: list[tuple[str, Callable[[], dict]]] = []
    if not args.skip_tests:
        parts.append(("tests", lambda: gpu_tests(args.test_timeout)))
    for name in ("minkunet", "res16unet"):
        parts.extend(step_checks(name, args.crop))
    if not args.skip_svc:
        parts.append(("svc_quickstart", svc_quickstart))

    start = time.perf_counter()
    try:
        engines = installed()
    except Exception as exc:
        engines = {"error": f"{type(exc).__name__}: {exc}"}
    rows = [run_part(name, fn) for name, fn in parts]
    total = time.perf_counter() - start

    print(f"\nunsup3d GPU check on {torch.cuda.get_device_name(0)} (torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}); engines {engines}; {total:.0f} s in all\n")
    print(f"{'part':<24} {'result':<7} {'time s':>7} {'peak MB':>8}  detail")
    for row in rows:
        print(f"{row['part']:<24} {'ok' if row['ok'] else 'FAILED':<7} {row['seconds']:>7.1f} "
              f"{row['peak_gpu_mb']:>8.0f}  {detail(row)}")
    path = None
    for row in rows:
        path = _write_quietly(args.json_name, {**row, "engines": engines, "total_seconds": total})
    print(f"\n{sum(r['ok'] for r in rows)} of {len(rows)} parts ok; rows in {path}")
    return 0 if all(r["ok"] for r in rows) else 1


def _write_quietly(name: str, row: dict) -> Path:
    """write_row without its pretty-printed echo (the table above says it)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return write_row(name, row)


if __name__ == "__main__":
    sys.exit(main())
