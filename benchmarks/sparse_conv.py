"""Speed of unsup3d.sparse against spconv on CPU: one 3x3x3 submanifold conv and a whole MinkUNet.

The scene is a simulated 64-beam LiDAR sweep (ground, buildings, cars; 5 cm voxels), or with
``--scene kitti`` the first SemanticKITTI frame of the sample data in samples/. Every timed call starts from
a fresh tensor, so kernel-map building is inside every figure, ours and spconv's; ours and spconv's
calls alternate, so both see the same machine load. spconv runs forward only (its CPU backward needs
CUDA), on one thread by default: with more, spconv 2.3.8's CPU convolution intermittently returns wrong
features (errors ~0.5 on unit-scale outputs), which `max_abs_diff` shows. The whole-network part
mirrors `unsup3d.models.MinkUNet` in spconv (SubMConv3d / SparseConv3d / SparseInverseConv3d sharing
maps through `indice_key`) with the same weights, and reports how far the two outputs are apart.

    python benchmarks/sparse_conv.py                       # 100k sites, conv and MinkUNet
    python benchmarks/sparse_conv.py --sites 20000 --repeat 2   # quick
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import timeit, write_row  # noqa: E402
from unsup3d.sparse import SparseTensor, kernel_offsets, sparse_quantize  # noqa: E402
from unsup3d.sparse import nn as spnn  # noqa: E402
from unsup3d.sparse.kernel_map import get_kernel_map  # noqa: E402

KITTI_FRAME = (Path(__file__).resolve().parents[1]
               / "samples/semantickitti_seq00/sequences/00/velodyne/000000.bin")


# ----------------------------------------------------------------------------------------------- scenes
def _ray_boxes(dirs: np.ndarray, origin: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance along each ray to the nearest box (inf where none), slab test."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs[:, None, :]
        t0 = (lo[None] - origin) * inv
        t1 = (hi[None] - origin) * inv
    near = np.nanmax(np.minimum(t0, t1), axis=2)
    far = np.nanmin(np.maximum(t0, t1), axis=2)
    hit = (near <= far) & (near > 0)
    return np.where(hit, near, np.inf).min(axis=1)


def lidar_points(azimuths: int, seed: int = 0) -> np.ndarray:
    """A 64-beam sweep from 1.73 m over ground, building blocks and cars: (N, 4) x, y, z, intensity."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(24):  # buildings and walls along both sides of a street
        side = rng.choice([-1.0, 1.0])
        x0 = rng.uniform(-70, 70)
        y0 = side * rng.uniform(8, 25)
        far = (x0 + rng.uniform(8, 25), y0 + side * rng.uniform(5, 15), rng.uniform(4, 15))
        boxes.append(((x0, y0, 0.0), far))
    for _ in range(30):  # cars and poles
        x0, y0 = rng.uniform(-40, 40), rng.uniform(-7, 7)
        if abs(x0) < 3 and abs(y0) < 2:
            continue
        size = (4.2, 1.8, 1.5) if rng.random() < 0.7 else (0.3, 0.3, 4.0)
        boxes.append(((x0, y0, 0.0), (x0 + size[0], y0 + size[1], size[2])))
    lo = np.array([tuple(min(a, b) for a, b in zip(*bx)) for bx in boxes])
    hi = np.array([tuple(max(a, b) for a, b in zip(*bx)) for bx in boxes])
    elev = np.deg2rad(np.linspace(-24.8, 2.0, 64))
    azim = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)
    e, a = np.meshgrid(elev, azim, indexing="ij")
    dirs = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)
    origin = np.array([0.0, 0.0, 1.73])
    t = np.full(dirs.shape[0], np.inf)
    for chunk in np.array_split(np.arange(dirs.shape[0]), max(1, dirs.shape[0] // 20000)):
        t[chunk] = _ray_boxes(dirs[chunk], origin, lo, hi)
    with np.errstate(divide="ignore"):
        t_ground = np.where(dirs[:, 2] < 0, -origin[2] / dirs[:, 2], np.inf)
    t = np.minimum(t, t_ground)
    keep = t < 80.0
    pts = origin + dirs[keep] * (t[keep] + rng.normal(0, 0.01, keep.sum()))[:, None]
    intensity = rng.uniform(0, 1, (pts.shape[0], 1))
    return np.concatenate([pts, intensity], axis=1).astype(np.float32)


def voxelize(points: np.ndarray, voxel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-0 voxel coordinates (N, 4) int32, non-negative, and the first point's features (N, 4)."""
    vox, index = sparse_quantize(points[:, :3], voxel, return_index=True)
    vox = vox - vox.min(axis=0)
    coords = np.concatenate([np.zeros((vox.shape[0], 1), np.int32), vox], axis=1)
    return torch.from_numpy(coords), torch.from_numpy(points[index])


def make_scene(kind: str, sites: int, voxel: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "kitti":
        if not KITTI_FRAME.is_file():
            raise SystemExit(f"sparse_conv: {KITTI_FRAME} not found (use --scene lidar)")
        return voxelize(np.fromfile(KITTI_FRAME, dtype=np.float32).reshape(-1, 4), voxel)
    azimuths = 2048
    for _ in range(3):  # the voxel count grows about linearly with the azimuth resolution
        coords, feats = voxelize(lidar_points(azimuths, seed), voxel)
        if abs(coords.shape[0] - sites) < 0.03 * sites:
            break
        azimuths = max(64, int(azimuths * sites / coords.shape[0]))
    return coords, feats


# ------------------------------------------------------------------------------------ spconv mirror
def _spconv_weight(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Our (K, C_in, C_out) rows in spconv's (C_out, k, k, k, C_in) layout (cell = offset + (k-1)//2)."""
    u = kernel_offsets(k).long() + (k - 1) // 2
    w = kernel.new_empty(kernel.shape[2], k, k, k, kernel.shape[1])
    w[:, u[:, 0], u[:, 1], u[:, 2], :] = kernel.permute(2, 0, 1)
    return w


def build_spconv_minkunet(model: nn.Module) -> nn.Module:
    """A module over spconv tensors computing what `model` (a `unsup3d.models.MinkUNet`) computes.

    Follows MinkUNet's torchsparse / SegContrast layout: `stem`, `stage1..4` (k2 s2 conv block and two
    residual blocks), `up1..4` (transposed conv block, then two residual blocks after the skip concat).
    Subm convs of one stride share an `indice_key`; a transposed conv reuses its downsampling's.
    """
    import spconv.pytorch as spconv

    def bn(mod: nn.Module) -> nn.BatchNorm1d:
        out = nn.BatchNorm1d(mod.num_features, eps=mod.eps, momentum=mod.momentum)
        out.load_state_dict(mod.state_dict())
        return out

    def conv(mod: spnn.Conv3d, level: int) -> nn.Module:
        k, cin, cout = mod.kernel_size[0], mod.in_channels, mod.out_channels
        kernel = mod.kernel.detach()
        if mod.transposed:
            m = spconv.SparseInverseConv3d(cin, cout, k, indice_key=f"down{level}", bias=False)
        elif mod.stride[0] > 1:
            m = spconv.SparseConv3d(cin, cout, k, stride=mod.stride[0], indice_key=f"down{level + 1}",
                                    bias=False)
        elif k == 1:
            m = nn.Linear(cin, cout, bias=False)
            m.weight.data = kernel[0].t().contiguous()
            return m
        else:
            m = spconv.SubMConv3d(cin, cout, k, indice_key=f"subm{level}", bias=False)
        m.weight.data = _spconv_weight(kernel, k)
        return m

    def layers(block: nn.Module, level: int) -> nn.ModuleList:
        """Its convs and BNs in order, each conv followed by its BN and a ReLU (conv / deconv blocks)."""
        convs = [m for m in block.modules() if isinstance(m, spnn.Conv3d)]
        bns = [m for m in block.modules() if isinstance(m, spnn.BatchNorm)]
        out = []
        for c, b in zip(convs, bns):
            out += [conv(c, level), bn(b), nn.ReLU()]
        return nn.ModuleList(out)

    def residual(res: nn.Module, level: int) -> nn.ModuleDict:
        net = res.net
        d = nn.ModuleDict({"c1": conv(net[0], level), "b1": bn(net[1]), "c2": conv(net[3], level),
                           "b2": bn(net[4])})
        if not isinstance(res.downsample, nn.Identity):
            d["sc"] = conv(res.downsample[0], level)
            d["sb"] = bn(res.downsample[1])
        return d

    class Mirror(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = layers(model.stem, 0)
            self.down = nn.ModuleList()
            for lvl in range(4):  # stage lvl+1 goes from stride 2^lvl to 2^(lvl+1)
                stage = getattr(model, f"stage{lvl + 1}")
                self.down.append(nn.ModuleList([layers(stage[0], lvl), residual(stage[1], lvl + 1),
                                                residual(stage[2], lvl + 1)]))
            self.up = nn.ModuleList()
            for i in range(4):  # up stage i+1 goes from stride 2^(4-i) to 2^(3-i)
                deconv, blocks = getattr(model, f"up{i + 1}")
                lvl = 3 - i
                self.up.append(nn.ModuleList([layers(deconv, lvl + 1), residual(blocks[0], lvl),
                                              residual(blocks[1], lvl)]))

        @staticmethod
        def seq(t, mods):
            for j in range(0, len(mods), 3):
                t = mods[j](t)
                t = t.replace_feature(mods[j + 2](mods[j + 1](t.features)))
            return t

        @staticmethod
        def res(t, d):
            out = d["c1"](t)
            out = out.replace_feature(torch.relu(d["b1"](out.features)))
            out = d["b2"](d["c2"](out).features)
            short = d["sb"](d["sc"](t.features)) if "sc" in d else t.features
            return t.replace_feature(torch.relu(out + short))

        def forward(self, t):
            t = self.seq(t, self.stem)
            skips = [t]
            for down in self.down:
                t = self.res(self.res(self.seq(t, down[0]), down[1]), down[2])
                skips.append(t)
            t = skips.pop()
            for up in self.up:
                u = self.seq(t, up[0])
                t = u.replace_feature(torch.cat([u.features, skips.pop().features], dim=1))
                t = self.res(self.res(t, up[1]), up[2])
            return t

    return Mirror()


def spconv_shape(coords: torch.Tensor, multiple: int = 16) -> list[int]:
    """spconv's spatial shape, rounded up so that no strided conv drops the sites at the far border."""
    return (((coords[:, 1:].max(0).values + multiple) // multiple) * multiple).tolist()


# ----------------------------------------------------------------------------------------- benches
def paired_timeit(fa, fb, repeat: int) -> tuple[float, float]:
    """Median times of `fa` and `fb`, called alternately so that both see the same machine load."""
    ta, tb = [], []
    fa(), fb()  # warm-up
    for _ in range(repeat):
        ta.append(timeit(fa, repeat=1, warmup=0))
        tb.append(timeit(fb, repeat=1, warmup=0))
    return sorted(ta)[repeat // 2], sorted(tb)[repeat // 2]


def bench_conv(coords: torch.Tensor, channels: int, repeat: int, use_spconv: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(coords.shape[0], channels, generator=g)
    conv = spnn.Conv3d(channels, channels, 3)
    row: dict = {}

    def ours_map() -> None:
        get_kernel_map(SparseTensor(feats, coords), (3, 3, 3), (1, 1, 1), (1, 1, 1))

    def ours_fwd() -> torch.Tensor:
        with torch.no_grad():
            return conv(SparseTensor(feats, coords)).F

    x_grad = feats.clone().requires_grad_(True)

    def ours_fwd_bwd() -> None:
        out = conv(SparseTensor(x_grad, coords)).F
        out.backward(torch.ones_like(out))

    row["ours_map_s"] = timeit(ours_map, repeat=repeat)
    row["ours_fwd_bwd_s"] = timeit(ours_fwd_bwd, repeat=repeat)
    if not use_spconv:
        row["ours_fwd_s"] = timeit(ours_fwd, repeat=repeat)
    else:
        import spconv.pytorch as spconv

        sconv = spconv.SubMConv3d(channels, channels, 3, bias=False, indice_key="subm0")
        sconv.weight.data = _spconv_weight(conv.kernel.detach(), 3)
        shape = spconv_shape(coords)

        def sp_fwd() -> torch.Tensor:
            with torch.no_grad():
                return sconv(spconv.SparseConvTensor(feats, coords, shape, 1)).features

        row["ours_fwd_s"], row["spconv_fwd_s"] = paired_timeit(ours_fwd, sp_fwd, repeat)
        row["fwd_ratio_ours_over_spconv"] = row["ours_fwd_s"] / row["spconv_fwd_s"]
        row["max_abs_diff"] = float((ours_fwd() - sp_fwd()).abs().max())
    return row


def bench_unet(coords: torch.Tensor, feats: torch.Tensor, repeat: int, use_spconv: bool,
               width: float) -> dict:
    from unsup3d.models import MinkUNet

    torch.manual_seed(0)
    model = MinkUNet(in_channels=feats.shape[1], width=width)
    row: dict = {"params": sum(p.numel() for p in model.parameters())}

    def ours_fwd() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model(SparseTensor(feats, coords))

    def ours_fwd_bwd() -> None:
        model.train()
        model(SparseTensor(feats, coords)).square().mean().backward()

    row["ours_fwd_bwd_s"] = timeit(ours_fwd_bwd, repeat=repeat)
    if not use_spconv:
        row["ours_fwd_s"] = timeit(ours_fwd, repeat=repeat)
    else:
        import spconv.pytorch as spconv

        model.eval()
        mirror = build_spconv_minkunet(model).eval()
        shape = spconv_shape(coords)

        def sp_fwd() -> torch.Tensor:
            with torch.no_grad():
                return mirror(spconv.SparseConvTensor(feats, coords, shape, 1)).features

        row["ours_fwd_s"], row["spconv_fwd_s"] = paired_timeit(ours_fwd, sp_fwd, repeat)
        row["fwd_ratio_ours_over_spconv"] = row["ours_fwd_s"] / row["spconv_fwd_s"]
        ours, theirs = ours_fwd(), sp_fwd()
        row["max_abs_diff"] = float((ours - theirs).abs().max())
        row["output_scale"] = float(ours.abs().max())
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=100_000, help="target voxel count of the LiDAR scene")
    p.add_argument("--scene", choices=("lidar", "kitti"), default="lidar")
    p.add_argument("--voxel", type=float, default=0.05)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--width", type=float, default=1.0, help="MinkUNet channel multiplier")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (0: leave as is); 1 by default because spconv 2.3's CPU path gives "
                        "wrong sums now and then with more (see max_abs_diff)")
    p.add_argument("--no-spconv", action="store_true")
    p.add_argument("--no-unet", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_spconv = not args.no_spconv
    if use_spconv:
        try:
            import spconv.pytorch  # noqa: F401
        except ImportError:
            print("spconv is not installed: timing ours only")
            use_spconv = False

    coords, feats = make_scene(args.scene, args.sites, args.voxel, args.seed)
    occupancy = coords.shape[0] / math.prod((coords[:, 1:].max(0).values + 1).tolist())
    print(f"scene: {args.scene}, {coords.shape[0]} sites at {args.voxel} m, box occupancy {occupancy:.2e}")
    base = {"scene": args.scene, "sites": coords.shape[0], "voxel": args.voxel, "repeat": args.repeat}

    conv = bench_conv(coords, args.channels, args.repeat, use_spconv)
    write_row("sparse_conv", {**base, "part": f"subm3_{args.channels}to{args.channels}", **conv})
    rows = [("3x3x3 subm conv", conv)]
    if not args.no_unet:
        unet = bench_unet(coords, feats, args.repeat, use_spconv, args.width)
        write_row("sparse_conv", {**base, "part": "minkunet", "width": args.width, **unet})
        rows.append(("MinkUNet", unet))
    for name, row in rows:
        line = f"{name}: ours forward {row['ours_fwd_s']:.3f} s, fwd+bwd {row['ours_fwd_bwd_s']:.3f} s"
        if "spconv_fwd_s" in row:
            line += (f"; spconv forward {row['spconv_fwd_s']:.3f} s; ours/spconv "
                     f"{row['fwd_ratio_ours_over_spconv']:.2f} (max |diff| {row['max_abs_diff']:.1e})")
        print(line)


if __name__ == "__main__":
    main()
