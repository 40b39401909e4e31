"""Res16UNet's trilinear interpolation on a real KITTI frame: the cached sparse matrix against the corner
loop it replaced (benchmarks/_interpolate_loop.py), forward and backward, one thread by default.

The frame (samples/, 5 cm voxels) is interpolated from its four coarse levels (strides 2, 4, 8, 16),
as Res16UNet's decoder does, with 64 channels. Each timed call starts from fresh tensors, so building
the weights is inside the forward figure; calls alternate between the two, so both see the same load.
Prints and appends one JSON row to benchmarks/results/interpolate.jsonl.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from benchmarks._interpolate_loop import trilinear_interpolate_loop  # noqa: E402
from unsup3d.data.formats.semantic_kitti import read_scan  # noqa: E402
from unsup3d.models.interpolate import trilinear_interpolate  # noqa: E402
from unsup3d.sparse import sparse_quantize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FRAME = ROOT / "samples/semantickitti_seq00/sequences/00/velodyne/000000.bin"


def levels(voxel: float) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    scan = read_scan(FRAME)
    coords = torch.from_numpy(np.asarray(sparse_quantize(scan[:, :3], voxel))).int()
    query = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], dim=1)
    out = []
    for s in (2, 4, 8, 16):
        parents = torch.div(query[:, 1:], s, rounding_mode="floor") * s
        out.append((s, torch.unique(torch.cat([query[:, :1], parents], dim=1), dim=0).int()))
    return query, out


def one_pass(
    fn, query: torch.Tensor, coarse: list[tuple[int, torch.Tensor]], channels: int
) -> tuple[float, float]:
    """Seconds of the forward (weights built inside) and of the backward over the four levels."""
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(len(c), channels, generator=g).requires_grad_(True) for _, c in coarse]
    query = query.clone()  # fresh tensors: no cached weights
    t0 = time.perf_counter()
    out = sum(fn(f, c.clone(), s, query) for f, (s, c) in zip(feats, coarse))
    t1 = time.perf_counter()
    out.square().sum().backward()
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voxel", type=float, default=0.05)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    query, coarse = levels(args.voxel)
    times: dict[str, list[tuple[float, float]]] = {"matrix": [], "loop": []}
    one_pass(trilinear_interpolate, query, coarse, args.channels)  # warm-up
    one_pass(trilinear_interpolate_loop, query, coarse, args.channels)
    for _ in range(args.repeat):
        times["matrix"].append(one_pass(trilinear_interpolate, query, coarse, args.channels))
        times["loop"].append(one_pass(trilinear_interpolate_loop, query, coarse, args.channels))

    def median(rows: list[tuple[float, float]], i: int | None) -> float:
        values = sorted(r[0] + r[1] if i is None else r[i] for r in rows)
        return values[len(values) // 2]

    row = {"voxels": int(query.shape[0]), "coarse_sites": [int(len(c)) for _, c in coarse],
           "channels": args.channels, "threads": args.threads, "repeat": args.repeat}
    for name, rows in times.items():
        row[name] = {
            "forward_s": median(rows, 0), "backward_s": median(rows, 1), "total_s": median(rows, None)
        }
    row["speedup"] = row["loop"]["total_s"] / row["matrix"]["total_s"]
    write_row("interpolate", row)
    loop, matrix = row["loop"], row["matrix"]
    print(
        f"\n{row['voxels']} voxels, 4 levels, {args.channels} channels: corner loop "
        f"{loop['total_s'] * 1000:.0f} ms (forward {loop['forward_s'] * 1000:.0f}), sparse matrix "
        f"{matrix['total_s'] * 1000:.0f} ms (forward {matrix['forward_s'] * 1000:.0f}): {row['speedup']:.2f}x"
    )


if __name__ == "__main__":
    main()
