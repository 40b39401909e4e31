"""bf16-mixed (``--trainer.precision bf16-mixed``): a training step of every stage under CPU bfloat16
autocast gives a finite float32 loss close to the float32 step's from the same weights and batch, with
finite gradients; what feeds metrics, K-means and pseudo labels stays float32."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch

from unsup3d.models import MinkUNet, Res16UNet
from unsup3d.pointdc.clustering_pass import cluster_pass
from unsup3d.pointdc.cmd import CMDModule
from unsup3d.pointdc.datamodules import SyntheticRoomsDataModule
from unsup3d.pointdc.linear_probe import LinearProbeModule
from unsup3d.pointdc.svc import SVCModule
from unsup3d.stssl.byol import normalized_mse
from unsup3d.stssl.datamodules import SyntheticLidarDataModule
from unsup3d.stssl.finetune import FinetuneModule
from unsup3d.stssl.interframe import InterFrameModule
from unsup3d.stssl.p2c import P2CModule
from unsup3d.training.precision import float32, to_float32

CPU = torch.device("cpu")
#: relative difference of a bf16 step's loss from the fp32 step's (bf16 keeps 8 mantissa bits)
LOSS_RTOL = 0.03


def bf16() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.fixture(autouse=True)
def _quiet_log() -> None:
    # the steps run without a Trainer: self.log() warns and does nothing
    warnings.filterwarnings("ignore", message=".*self.log.*")


@pytest.fixture(scope="module")
def rooms(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """(an augmented training batch, the unaugmented clustering batch) of one synthetic room."""
    dm = SyntheticRoomsDataModule(
        num_scenes=2, num_val=1, frames_per_scene=1, voxel_size=0.1, batch_size=1, num_workers=0,
        data_root=str(tmp_path_factory.mktemp("rooms")),
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    return next(iter(dm.train_dataloader())), next(iter(dm.cluster_dataloader()))


@pytest.fixture(scope="module")
def lidar(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A training batch of pairs of synthetic LiDAR frames with clusters, tracks and a second view of t."""
    dm = SyntheticLidarDataModule(
        num_sequences=3, num_val=1, frames_per_sequence=3, azimuth_steps=256, voxel_size=0.2, batch_size=2,
        num_workers=0, prepare_workers=1, max_voxels=1200, pairs=True, p2c_view=True, interval_start=1,
        interval_max=1, tracks=True, track_min_points=40, train_labels=True,
        data_root=str(tmp_path_factory.mktemp("lidar")),
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def compare_steps(module: torch.nn.Module, step: Callable[[torch.nn.Module], torch.Tensor]) -> None:
    """``step`` on a copy of ``module`` in float32 and on another under bf16 autocast (backward outside it,
    as Lightning does); asserts a float32, finite loss within LOSS_RTOL of the float32 one, and finite
    gradients."""
    fp32, mixed = copy.deepcopy(module), copy.deepcopy(module)
    torch.manual_seed(0)
    ref = step(fp32)
    torch.manual_seed(0)
    with bf16():
        loss = step(mixed)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and float(ref) > 0
    loss.backward()
    grads = [p.grad for p in mixed.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    ref, loss = float(ref), float(loss.detach())
    assert abs(loss - ref) <= LOSS_RTOL * abs(ref), (loss, ref)


# -- the float32 islands ------------------------------------------------------------------------------


def test_float32_turns_autocast_off_and_to_float32_keeps_float64() -> None:
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with bf16():
        assert (a @ b).dtype == torch.bfloat16
        with float32(CPU):
            assert (a @ b).dtype == torch.float32
    assert to_float32(a.bfloat16()).dtype == torch.float32
    assert to_float32(a.double()).dtype == torch.float64


def test_byol_loss_is_float32_for_nearly_aligned_bf16_rows() -> None:
    # 2 - 2 cos near 0 is what BYOL trains on: a bfloat16 cosine would round it to a multiple of 2^-7
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 128, generator=g)
    p = z + 0.01 * torch.randn(64, 128, generator=g)
    ref = normalized_mse(p, z)
    with bf16():
        got = normalized_mse(p.bfloat16(), z.bfloat16())
    assert got.dtype == torch.float32
    exact = normalized_mse(p.bfloat16().float(), z.bfloat16().float())
    torch.testing.assert_close(got, exact)
    assert float((got - ref).abs().max()) < 1e-4 < float(ref.mean())


def test_clustering_pass_is_float32_under_autocast(rooms: tuple[dict, dict]) -> None:
    _, clean = rooms
    torch.manual_seed(0)
    net = Res16UNet(6, width=0.25)

    def run() -> tuple[torch.Tensor, dict]:
        centroids, labels = cluster_pass(
            net, lambda: [clean], 5, CPU, nonparametric=True, superpoint_pooling=True, niter=5
        )
        return centroids, labels.by_point

    c32, l32 = run()
    with bf16():
        c16, l16 = run()
    assert c16.dtype == torch.float32
    assert torch.equal(c16, c32)
    assert l16.keys() == l32.keys() and all(torch.equal(l16[k], l32[k]) for k in l32)


# -- one training step of every stage -------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False], ids=["release", "eq7"])
def test_cmd_step(rooms: tuple[dict, dict], normalize: bool) -> None:
    batch, _ = rooms
    torch.manual_seed(0)
    net = Res16UNet(6, width=0.25)
    module = CMDModule(backbone=net, target_dim=3, target_key="color", seen_key=None, normalize=normalize)
    compare_steps(module, lambda m: m.training_step(batch, 0))


def test_svc_step_and_its_evaluation(rooms: tuple[dict, dict]) -> None:
    """After warm-up: the non-parametric classifier fixed to the centroids (Eq. 9), pseudo labels."""
    batch, clean = rooms
    torch.manual_seed(0)
    module = SVCModule(backbone=Res16UNet(6, width=0.25), num_classes=5, warmup_epochs=0,
                       fixed_normalize=True, kmeans_iters=5)  # fmt: skip
    centroids, labels = cluster_pass(
        module.backbone, lambda: [clean], 5, CPU, nonparametric=True, superpoint_pooling=True, niter=5
    )
    module.centroids.copy_(centroids)
    module.labels = labels
    module._set_classifier(0)
    compare_steps(module, lambda m: m.training_step(batch, 0))

    module.eval()
    with torch.no_grad():
        ref = module(clean)
        pred32 = module.predict_clusters(clean)
        with bf16():
            logits = module(clean)
            pred = module.predict_clusters(clean)
    assert logits.dtype == torch.float32  # what argmax, pooling and cross-entropy see
    assert float((logits - ref).abs().max()) < 0.1
    assert float((pred == pred32).float().mean()) > 0.9


def test_svc_joint_scores_are_float32(rooms: tuple[dict, dict]) -> None:
    """The teacher-free evaluation's joint scores (network features and descriptors against the joint
    centroids) stay float32 under bf16."""
    _, clean = rooms
    descriptor = torch.rand(len(clean["inverse"]), 14, generator=torch.Generator().manual_seed(0))
    batch = {**clean, "descriptor": descriptor}
    torch.manual_seed(0)
    module = SVCModule(backbone=Res16UNet(6, width=0.25), num_classes=5, kmeans_iters=5,
                       descriptor_weights={"color": 0.5, "height": 1.0}, eval_descriptors=True)  # fmt: skip
    centroids, _ = cluster_pass(module.backbone, lambda: [batch], 5, CPU, nonparametric=False,
                                superpoint_pooling=False, niter=5, scale=module.scale)  # fmt: skip
    module.centroids.copy_(centroids)
    module.eval()
    with torch.no_grad():
        ref = module.eval_logits(batch)
        with bf16():
            got = module.eval_logits(batch)
    assert got.dtype == torch.float32
    # what is left is the bf16 backbone's rounding, a few hundredths of the scores' range at most
    assert float((got - ref).abs().max()) < 0.1
    assert float((got.argmax(1) == ref.argmax(1)).float().mean()) > 0.9


def test_linear_probe_step(rooms: tuple[dict, dict]) -> None:
    batch, _ = rooms
    torch.manual_seed(0)
    module = LinearProbeModule(backbone=Res16UNet(6, width=0.25), num_classes=20)
    compare_steps(module, lambda m: m.training_step(batch, 0))
    with bf16(), torch.no_grad():
        assert module(batch).dtype == torch.float32


def _p2c_batch(lidar: dict) -> dict:
    """Two views of frame t (view0 and the pair's second view of t)."""
    return {"view0": lidar["view0"], "view1": lidar["view2"], "interval": torch.zeros_like(lidar["interval"])}


def test_p2c_step(lidar: dict) -> None:
    torch.manual_seed(0)
    module = P2CModule(backbone=MinkUNet(4, width=0.25), min_cluster_points=5, feature_dropout=0.0)
    compare_steps(module, lambda m: m.training_step(_p2c_batch(lidar), 0))


def test_interframe_step(lidar: dict) -> None:
    torch.manual_seed(0)
    module = InterFrameModule(backbone=MinkUNet(4, width=0.25), min_cluster_points=5, feature_dropout=0.0)
    views = (lidar["view0"], lidar["view1"])
    online = tuple(module.online_features(v) for v in views)
    assert module.cluster_term(views, online, online, "track")[1] >= 2  # tracked pairs: a real inter term
    compare_steps(module, lambda m: m.training_step(lidar, 0))


def test_finetune_step(lidar: dict) -> None:
    view = {**lidar["view0"], "scene_index": lidar["view0"].get("scene_index", torch.arange(2))}
    assert bool((view["segment"] >= 0).any())
    torch.manual_seed(0)
    module = FinetuneModule(backbone=MinkUNet(4, width=0.25), num_classes=19)
    compare_steps(module, lambda m: m.training_step(view, 0))
    with bf16(), torch.no_grad():
        assert module(view).dtype == torch.float32


@pytest.mark.gpu
def test_cuda_bf16_steps_are_close_to_fp32(rooms: tuple[dict, dict], lidar: dict) -> None:
    """The same comparisons on CUDA: SVC (Res16UNet) and P2C (MinkUNet) under bf16 autocast."""
    dev = torch.device("cuda")

    def to(x):
        if isinstance(x, dict):
            return {k: to(v) for k, v in x.items()}
        return x.to(dev) if hasattr(x, "to") else x

    batch, clean = to(rooms[0]), to(rooms[1])
    torch.manual_seed(0)
    svc = SVCModule(backbone=Res16UNet(6, width=0.25), num_classes=5, warmup_epochs=0, kmeans_iters=5).to(dev)
    centroids, labels = cluster_pass(svc.backbone, lambda: [clean], 5, dev, nonparametric=True,
                                     superpoint_pooling=True, niter=5)  # fmt: skip
    svc.centroids.copy_(centroids)
    svc.labels = labels
    svc._set_classifier(0)
    p2c = P2CModule(backbone=MinkUNet(4, width=0.25), min_cluster_points=5, feature_dropout=0.0).to(dev)
    for module, b in ((svc, batch), (p2c, to(_p2c_batch(lidar)))):
        fp32, mixed = copy.deepcopy(module), copy.deepcopy(module)
        ref = fp32.training_step(b, 0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = mixed.training_step(b, 0)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert abs(float(loss) - float(ref)) <= LOSS_RTOL * abs(float(ref))
