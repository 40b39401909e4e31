"""Site lookups through a dense table against binary searches of sorted keys, on Res16UNet's inputs.

    python benchmarks/site_lookup.py [--root SCENE_FOLDERS] [--repeat R] [--threads T]

A batch of two indoor rooms (5 cm voxels): by default two of the synthetic rooms (written to a temporary
folder), or the first two training scenes of ``--root`` (scene folders, e.g. from ``unsup3d import``).
Times, for the structures every Res16UNet forward builds anew:

- the kernel maps of the stem (5x5x5, stride 1) and of the 3x3x3 convolutions at strides 1-16;
- the interpolation weights of the four coarse levels at the input voxels (one matrix, as the decoder
  builds it);

each through a dense table (`unsup3d.sparse.grid_table`) and through the sorted-key search alone
(``DENSE_TABLE_MAX`` set to 0), and checks that both give the same maps and matrices. A real KITTI frame
(``samples/``), whose voxels fill too little of their box, shows the fallback: no table is built, both
columns are the search. Prints the table and appends one JSON row to
``benchmarks/results/site_lookup.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import timeit, write_row  # noqa: E402
from unsup3d.data.formats.semantic_kitti import read_scan  # noqa: E402
from unsup3d.models import interpolate  # noqa: E402
from unsup3d.sparse import grid_table, kernel_offsets, sparse_quantize  # noqa: E402
from unsup3d.sparse import kernel_map as km  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FRAME = ROOT / "samples/semantickitti_seq00/sequences/00/velodyne/000000.bin"


def voxels(clouds: list[np.ndarray], voxel: float) -> torch.Tensor:
    """``(batch, x, y, z)`` voxel sites of the clouds, one batch item each."""
    rows = []
    for b, xyz in enumerate(clouds):
        v = torch.from_numpy(np.asarray(sparse_quantize(xyz, voxel))).long()
        rows.append(torch.cat([torch.full((len(v), 1), b), v], dim=1))
    return torch.cat(rows).int()


def rooms(root: Path | None) -> tuple[str, list[np.ndarray]]:
    """Two indoor clouds: the first two training scenes of `root`, or two synthetic rooms."""
    if root is not None:
        scenes = sorted(p for p in (root / "train").iterdir() if (p / "coord.npy").is_file())[:2]
        if len(scenes) < 2:
            raise SystemExit(f"{root}/train holds fewer than 2 scene folders with coord.npy")
        return str(root), [np.load(p / "coord.npy") for p in scenes]
    from unsup3d.synthetic.datamodules import SyntheticRoomsDataModule

    with tempfile.TemporaryDirectory() as tmp:
        dm = SyntheticRoomsDataModule(num_scenes=4, num_val=2, frames_per_scene=0, data_root=tmp,
                                      voxel_size=0.05, batch_size=2)
        dm.prepare_data()
        paths = sorted(Path(tmp).glob("*/train/*/coord.npy"))[:2]
        return "synthetic rooms", [np.load(p) for p in paths]


def level_sites(query: torch.Tensor, stride: int) -> torch.Tensor:
    parents = torch.div(query[:, 1:], stride, rounding_mode="floor") * stride
    return torch.unique(torch.cat([query[:, :1], parents], dim=1), dim=0).int()


def _same_map(a: km.KernelMap, b: km.KernelMap) -> bool:
    return a.bounds == b.bounds and torch.equal(a.in_idx, b.in_idx) and torch.equal(a.out_idx, b.out_idx)


def _same_matrix(a: interpolate.Interpolation, b: interpolate.Interpolation) -> bool:
    return torch.equal(a.order, b.order) and all(
        torch.equal(x.crow_indices(), y.crow_indices()) and torch.equal(x.col_indices(), y.col_indices())
        and torch.equal(x.values(), y.values())
        for x, y in ((a.matrix, b.matrix), (a.transpose, b.transpose))
    )


def measure(query: torch.Tensor, repeat: int) -> list[dict]:
    """One row per structure: seconds through the table and the search, and whether they agree."""
    cap = grid_table.DENSE_TABLE_MAX
    rows = []
    for stride, k in ((1, 5), (1, 3), (2, 3), (4, 3), (8, 3), (16, 3)):
        sites = query if stride == 1 else level_sites(query, stride)
        offsets = kernel_offsets(k) * stride
        index = km.sorted_coords(sites, offsets.abs().amax(dim=0).tolist())
        timed = {}

        def build(sites=sites, offsets=offsets, index=index, step=(stride,) * 3) -> km.KernelMap:
            return km.build_kernel_map(index, sites, sites, offsets, submanifold=True, step=step)

        for name, limit in (("table", cap), ("search", 0)):
            grid_table.DENSE_TABLE_MAX = limit
            try:
                timed[name] = build()
                timed[name + "_s"] = timeit(build, repeat=repeat)
            finally:
                grid_table.DENSE_TABLE_MAX = cap
        rows.append({"what": f"kernel map {k}x{k}x{k}, stride {stride}", "sites": int(sites.shape[0]),
                     "table_s": timed["table_s"], "search_s": timed["search_s"],
                     "same": _same_map(timed["table"], timed["search"])})
    coarse = [level_sites(query, s) for s in (2, 4, 8, 16)]
    timed = {}
    for name, limit in (("table", cap), ("search", 0)):
        grid_table.DENSE_TABLE_MAX = limit
        try:
            timed[name] = interpolate.interpolation_matrices(coarse, [2, 4, 8, 16], query)
            timed[name + "_s"] = timeit(
                lambda: interpolate.interpolation_matrices(coarse, [2, 4, 8, 16], query), repeat=repeat
            )
        finally:
            grid_table.DENSE_TABLE_MAX = cap
    rows.append({"what": "interpolation weights, 4 levels", "sites": int(query.shape[0]),
                 "table_s": timed["table_s"], "search_s": timed["search_s"],
                 "same": _same_matrix(timed["table"], timed["search"])})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=None, help="scene folders (default: synthetic rooms)")
    parser.add_argument("--voxel", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source, clouds = rooms(args.root)
    cases = {"indoor": (source, voxels(clouds, args.voxel))}
    if FRAME.is_file():
        cases["kitti"] = ("KITTI 00/000000", voxels([read_scan(FRAME)[:, :3]], args.voxel))
    result: dict = {"voxel": args.voxel, "threads": args.threads, "repeat": args.repeat}
    for case, (name, query) in cases.items():
        rows = measure(query, args.repeat)
        result[case] = {"source": name, "voxels": int(query.shape[0]), "rows": rows}
        print(f"\n{name}: {query.shape[0]} voxels, median of {args.repeat}, ms")
        print(f"{'':36s} {'sites':>7s} {'table':>8s} {'search':>8s} {'speedup':>8s} same")
        for r in rows:
            print(f"{r['what']:36s} {r['sites']:7d} {r['table_s'] * 1e3:8.1f} {r['search_s'] * 1e3:8.1f} "
                  f"{r['search_s'] / r['table_s']:7.2f}x {r['same']}")
        total_t, total_s = sum(r["table_s"] for r in rows), sum(r["search_s"] for r in rows)
        result[case]["table_s"], result[case]["search_s"] = total_t, total_s
        print(f"{'all of one forward pass':36s} {'':7s} {total_t * 1e3:8.1f} {total_s * 1e3:8.1f} "
              f"{total_s / total_t:7.2f}x")
    write_row("site_lookup", result)
    return result


if __name__ == "__main__":
    main()
