"""CMD's feature pass per scene (PointDC Eq. 3-6): views, teacher, back-projection, on a synthetic room.

One synthetic room (ScanNet layout, ~40k points) is generated and prepared; its targets are then
computed from its RGB-D frames and from rendered views, with a tiny random ViT and with a random ViT of
DINO ViT-S/8's size (the recipe's teacher; random weights time the same as trained ones). Reported per
(teacher, views): seconds to build the views (read and resize frames, or render the cloud), to run the
teacher on them, to back-project and pool (compute_targets on the teacher's precomputed maps), and
the whole pass of the scene as ``run_feature_pass`` does it (including writing the arrays). Prints
and appends one JSON row to benchmarks/results/cmd_targets.jsonl.
Quick run: --teachers tiny --views 4 --image-size 120 160.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import timeit, write_row  # noqa: E402
from unsup3d.data.scene_folder import list_scenes, read_scene  # noqa: E402
from unsup3d.pointdc.datamodules import SyntheticRoomsDataModule  # noqa: E402
from unsup3d.pointdc.feature_pass import (  # noqa: E402
    FeatureTargets,
    load_teacher,
    run_feature_pass,
    scene_views,
)
from unsup3d.pointdc.lifting import compute_targets  # noqa: E402

TEACHERS = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "vits8": {},  # DINO ViT-S/8's own architecture (384-d, 12 layers, patch 8)
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(dm: SyntheticRoomsDataModule, teacher_key: str, kind: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = FeatureTargets(
        allow_random_teacher=True,
        random_teacher_config=TEACHERS[teacher_key] or None,
        cache_dir=args.cache_dir,
        views=kind,
        frame_every=1,
        num_views=args.views,
        inside_fraction=0.5,
        image_size=tuple(args.image_size),
        chunk=args.chunk,
        device=str(device),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the RANDOM TEACHER warning: expected here
        teacher = load_teacher(cfg).to(device)
    scene_dir = list_scenes(dm.prepared_root, "train")[0]
    frames = dm.frames_dir(scene_dir)
    scene = read_scene(scene_dir, ["coord", "color", "superpoint"])
    views = scene_views(scene, cfg, kind, frames, device)

    def run_teacher() -> list[torch.Tensor]:
        return [teacher(views.images[s : s + cfg.chunk].to(device)) for s in range(0, len(views), cfg.chunk)]

    maps = run_teacher()

    def cached(images: torch.Tensor, _calls: list[int] = [0]) -> torch.Tensor:  # noqa: B006
        # The teacher's maps, precomputed: what is left of compute_targets is the back-projection.
        out = maps[_calls[0] % len(maps)]
        _calls[0] += 1
        return out

    def run_backprojection() -> None:
        compute_targets(scene["coord"], scene["superpoint"], cached, views, chunk=cfg.chunk, device=device)

    def run_pass() -> None:
        (scene_dir / "cmd_target.json").unlink(missing_ok=True)
        run_feature_pass([scene_dir], cfg, dm.frames_dir, teacher=teacher, desc="")

    t_views = timeit(lambda: scene_views(scene, cfg, kind, frames, device), repeat=args.repeat)
    t_teacher = timeit(run_teacher, repeat=args.repeat)
    t_backprojection = timeit(run_backprojection, repeat=args.repeat)
    t_pass = timeit(run_pass, repeat=args.repeat)
    _sync(device)
    return {
        "teacher": teacher_key,
        "feature_dim": teacher.feature_dim,
        "views": kind,
        "num_views": len(views),
        "num_points": len(scene["coord"]),
        "views_s": round(t_views, 4),
        "teacher_s": round(t_teacher, 4),
        "backprojection_s": round(t_backprojection, 4),
        "scene_pass_s": round(t_pass, 4),
        "device": str(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teachers", default="tiny,vits8", help="comma-separated: tiny, vits8")
    parser.add_argument("--views", type=int, default=8, help="RGB-D frames, and rendered views, a scene")
    parser.add_argument("--image-size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--chunk", type=int, default=8, help="views per teacher call")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="default: CUDA when there is one")
    parser.add_argument(
        "--cache-dir", default=None, help="Hugging Face cache (default: none, random weights)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="cmd_targets_"))
    args.cache_dir = args.cache_dir or str(tmp / "no_hf_cache")  # random weights unless asked otherwise
    try:
        dm = SyntheticRoomsDataModule(
            num_scenes=1, num_val=0, frames_per_scene=args.views, data_root=str(tmp / "data")
        )
        t0 = time.perf_counter()
        dm.prepare_data()
        prepare_s = time.perf_counter() - t0
        results = [
            bench(dm, key, kind, args) for key in args.teachers.split(",") for kind in ("frames", "render")
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        print(
            f"{r['teacher']:>6} {r['views']:>6}: {r['num_views']} views of {r['num_points']} points, "
            f"views {r['views_s']:.3f} s + teacher {r['teacher_s']:.3f} s + back-projection "
            f"{r['backprojection_s']:.3f} s; whole scene {r['scene_pass_s']:.3f} s"
        )
    write_row(
        "cmd_targets",
        {
            "image_size": args.image_size,
            "chunk": args.chunk,
            "room_prepare_s": round(prepare_s, 3),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
