"""The descriptor pass: written once per scene, current scenes skipped, stale or damaged ones redone,
and carried into batches by the data modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unsup3d.data.scene_folder import write_scene
from unsup3d.pointdc.datamodules import SceneFolderDataModule
from unsup3d.pointdc.descriptor_pass import Descriptors, as_descriptors, grow_regions, run_descriptor_pass
from unsup3d.pointdc.geometric import point_descriptors


def _scenes(root: Path, n: int = 2) -> list[Path]:
    rng = np.random.default_rng(0)
    dirs = []
    for split in ("train", "val"):
        for i in range(n):
            coord = np.c_[rng.uniform(0, 3, (500, 2)), rng.uniform(0, 2, 500)].astype(np.float32)
            coord[:250, 2] = 0.0  # a floor
            d = write_scene(
                root / split / f"s{i}",
                {
                    "coord": coord,
                    "color": rng.integers(0, 256, (500, 3)).astype(np.uint8),
                    "segment": (coord[:, 2] > 0).astype(np.int64),
                },
            )
            dirs.append(d)
    return dirs


def test_pass_writes_caches_and_redoes(tmp_path: Path) -> None:
    dirs = _scenes(tmp_path)
    cfg = Descriptors(k=8)
    assert run_descriptor_pass(dirs, cfg) == []
    first = dirs[0] / "descriptor.npy"
    scene = {k: np.load(dirs[0] / f"{k}.npy") for k in ("coord", "color")}
    region = np.load(dirs[0] / "region.npy")
    grown = grow_regions(scene["coord"], None, cfg.region_c, scene["color"], cfg.region_color_weight)
    np.testing.assert_array_equal(region, grown)
    expect = point_descriptors(scene["coord"], scene["color"], region, k=8)
    np.testing.assert_array_equal(np.load(first), expect)
    assert json.loads((dirs[0] / "descriptor.json").read_text())["k"] == 8
    mtime = first.stat().st_mtime_ns
    run_descriptor_pass(dirs, cfg)
    assert first.stat().st_mtime_ns == mtime  # current: skipped
    first.write_bytes(b"broken")
    run_descriptor_pass(dirs, cfg)
    assert np.load(first).shape == (500, 14)  # damaged: redone
    (dirs[0] / "region.npy").unlink()
    run_descriptor_pass(dirs, cfg)
    np.testing.assert_array_equal(np.load(dirs[0] / "region.npy"), region)  # missing regions: redone
    run_descriptor_pass(dirs, Descriptors(k=12))
    assert json.loads((dirs[0] / "descriptor.json").read_text())["k"] == 12  # other settings: redone


def test_as_descriptors() -> None:
    assert as_descriptors(None) is None and as_descriptors(False) is None
    assert as_descriptors(True) == Descriptors()
    assert as_descriptors({"k": 9}).k == 9


def test_scene_folder_module_carries_descriptors_per_point(tmp_path: Path) -> None:
    _scenes(tmp_path)
    dm = SceneFolderDataModule(
        root=str(tmp_path), voxel_size=0.05, batch_size=2, descriptors=True, augment=True
    )
    dm.prepare_data()
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        desc = batch["descriptor"]
        assert desc.shape == (len(batch["inverse"]), 14)
        # the rows follow the points through augmentation: each is its stored point's descriptor
        for b, scene in enumerate(batch["scene_index"].tolist()):
            rows = batch["point_batch"] == b
            stored = np.load(loader.dataset.scene_dirs[scene] / "descriptor.npy")
            np.testing.assert_allclose(desc[rows].numpy(), stored[batch["point_index"][rows].numpy()])


def test_descriptor_weights_name_known_groups() -> None:
    from unsup3d.pointdc.clustering_pass import descriptor_scale

    scale = descriptor_scale({"color": 0.5, "height": 2.0})
    assert scale.shape == (14,) and float(scale[:3].sum()) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown groups"):
        descriptor_scale({"colour": 1.0})


# The 14 descriptor columns as point_descriptors' docstring and the README lay them out: colour (0-2),
# verticality (3), linearity / planarity / scattering (4-6), height (7), column top, depth under it
# and distance to the outline (8-10), the super-voxel's vertical and horizontal extent and size (11-13).
@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"color": 0.5, "height": 2.0}, [0.5, 0.5, 0.5, 0, 0, 0, 0, 2.0, 0, 0, 0, 0, 0, 0]),
        ({"normal": 3.0, "context": 0.25, "segment": 1.5},
         [0, 0, 0, 3.0, 0, 0, 0, 0, 0.25, 0.25, 0.25, 1.5, 1.5, 1.5]),
        ({"segment": 4.0, "shape": 0.7, "color": 1.0},  # not in column order
         [1.0, 1.0, 1.0, 0, 0.7, 0.7, 0.7, 0, 0, 0, 0, 4.0, 4.0, 4.0]),
        ({"color": 1, "normal": 2, "shape": 3, "height": 4, "context": 5, "segment": 6},
         [1, 1, 1, 2, 3, 3, 3, 4, 5, 5, 5, 6, 6, 6]),
    ],
)  # fmt: skip
def test_descriptor_scale_puts_each_group_weight_on_its_own_columns(weights, expected) -> None:
    """``descriptor_scale``: each named group's weight on that group's columns of the full 14-column
    layout (written out by hand above), whichever groups are named and in whatever order; 0 elsewhere."""
    from unsup3d.pointdc.clustering_pass import descriptor_scale

    assert descriptor_scale(weights).tolist() == pytest.approx(expected)


def test_grown_regions_keep_a_floor_and_a_wall_whole() -> None:
    """A floor and a wall meeting at a right angle, both painted in 0.5 m tiles of random colours: the
    super-voxels (normals and colour) cut each into pieces, the grown regions on the normals alone
    (``region_color_weight: 0``) keep each (nearly) whole and do not join the two."""
    from unsup3d.data.superpoints import felzenszwalb_superpoints

    rng = np.random.default_rng(3)
    floor = np.c_[rng.uniform(0, 4, (3000, 2)), rng.normal(scale=0.01, size=3000)]  # a scanner's noise
    wall = np.c_[rng.normal(scale=0.01, size=2000), rng.uniform(0, 4, 2000), rng.uniform(0.05, 2.5, 2000)]
    coord = np.concatenate([floor, wall]).astype(np.float32)
    part = np.repeat([0, 1], [3000, 2000])
    tile = np.floor(coord / 0.5).astype(int) @ [1, 17, 289]
    color = rng.integers(0, 256, (tile.max() + 1, 3))[tile].astype(np.uint8)
    fine = felzenszwalb_superpoints(coord, color, None, c=0.1, workers=1)
    grown = grow_regions(coord, None, 2.0)
    for p in (0, 1):
        share = np.bincount(grown[part == p]).max() / (part == p).sum()
        fine_share = np.bincount(fine[part == p]).max() / (part == p).sum()
        assert share > 0.9 and fine_share < 0.5, (share, fine_share)
    from unsup3d.data.superpoints import superpoint_purity

    assert superpoint_purity(grown, part) > 0.97  # a few corner points may go to the other side


@pytest.mark.parametrize(
    "units, descriptors, refused",
    [("region", True, {"descriptors": None}), ("merged", {"merge_regions": 3}, {"descriptors": True})],
)
def test_units_pool_over_their_stored_segments(tmp_path: Path, units, descriptors, refused) -> None:
    """``units: region`` pools over ``region.npy``, ``units: merged`` over ``merged.npy``; each is
    refused without what writes its file (the descriptor pass; its ``merge_regions``)."""
    _scenes(tmp_path)
    dm = SceneFolderDataModule(
        root=str(tmp_path), voxel_size=0.05, batch_size=1, descriptors=descriptors, units=units
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    stored = np.load(dm.datasets["val"].scene_dirs[int(batch["scene_index"][0])] / f"{units}.npy")
    np.testing.assert_array_equal(batch["superpoint_id"].numpy(), stored[batch["point_index"].numpy()])
    match = {"region": "descriptor pass", "merged": "merge_regions"}[units]
    with pytest.raises(ValueError, match=match):
        SceneFolderDataModule(root=str(tmp_path), units=units, **refused)


def test_descriptor_inputs_widen_the_network_input(tmp_path: Path) -> None:
    _scenes(tmp_path)
    dm = SceneFolderDataModule(root=str(tmp_path), voxel_size=0.05, descriptors=True, descriptor_inputs=True)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["sparse"].F.shape[1] == 6 + 14


def test_input_coords_z_drops_x_and_y_and_is_invariant_to_turns_about_z(tmp_path: Path) -> None:
    """input_coords z: RGB in [-0.5, 0.5] and z, written out from the stored arrays; unchanged when the
    scene turns about z, where the release's xyz input changes; 4 + 14 columns with the descriptors."""
    from unsup3d.data.transforms import RandomRotateZ

    rng = np.random.default_rng(0)
    coord = rng.uniform(-2, 2, (500, 3)).astype(np.float32)
    color = rng.integers(0, 256, (500, 3)).astype(np.uint8)
    sample = {"coord": coord, "color": color}
    z_only = SceneFolderDataModule(root=str(tmp_path), input_coords="z").input_features()
    xyz = SceneFolderDataModule(root=str(tmp_path)).input_features()
    expected = np.c_[color / 255.0 - 0.5, coord[:, 2]]
    np.testing.assert_allclose(z_only(sample), expected, rtol=0, atol=1e-6)
    turned = RandomRotateZ()(dict(sample), np.random.default_rng(3))
    assert not np.allclose(turned["coord"][:, :2], coord[:, :2], atol=1e-3)
    np.testing.assert_allclose(z_only(turned), z_only(sample), rtol=0, atol=1e-5)
    assert not np.allclose(xyz(turned), xyz(sample), atol=1e-3)
    with pytest.raises(ValueError, match="input_coords"):
        SceneFolderDataModule(root=str(tmp_path), input_coords="xy")

    _scenes(tmp_path)
    dm = SceneFolderDataModule(
        root=str(tmp_path), voxel_size=0.05, descriptors=True, descriptor_inputs=True, input_coords="z"
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["sparse"].F.shape[1] == 4 + 14


def test_descriptor_settings_are_checked_when_given() -> None:
    from unsup3d.pointdc.descriptor_pass import as_descriptors

    assert as_descriptors({"outline": "hull", "column_cap": None}).settings()["outline"] == "hull"
    with pytest.raises(ValueError, match="outline"):
        as_descriptors({"outline": "box"})
    with pytest.raises(ValueError, match="column_cap"):
        as_descriptors({"column_cap": 0.0})


def _wall_with_a_door(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4 x 2.5 m wall of off-white paint under a +-15 % lighting gradient with colour noise (sigma 8),
    holding a brown door and a blue picture in its plane, on a grey floor; labels 0 wall, 1 door,
    2 picture, 3 floor."""
    wall = np.c_[rng.normal(scale=0.005, size=6000), rng.uniform(0, 4, 6000), rng.uniform(0.02, 2.5, 6000)]
    floor = np.c_[
        rng.uniform(0.05, 3, (3000, 1)), rng.uniform(0, 4, (3000, 1)), rng.normal(scale=0.005, size=3000)
    ]
    y, z = wall[:, 1], wall[:, 2]
    label = np.zeros(len(wall), dtype=np.int64)
    label[(y > 1.5) & (y < 2.4) & (z < 2.1)] = 1
    label[(y > 3.0) & (y < 3.6) & (z > 1.2) & (z < 1.8)] = 2
    paint = np.array([[200, 200, 190], [120, 80, 50], [50, 90, 160]], dtype=np.float64)
    color = paint[label] * (0.85 + 0.3 * y / 4)[:, None]
    color = np.concatenate([color, np.tile([128.0, 128, 128], (len(floor), 1))])
    color = np.clip(color + rng.normal(scale=8, size=color.shape), 0, 255).astype(np.uint8)
    coord = np.concatenate([wall, floor]).astype(np.float32)
    return coord, color, np.concatenate([label, np.full(len(floor), 3)])


def test_colour_keeps_a_door_out_of_its_walls_region() -> None:
    """Coplanar with the wall, a door and a picture differ from it by colour alone: on the normals alone
    they are part of the wall's region; with the default colour weight each is (nearly) a region of its
    own, while the wall, under its lighting gradient and noise, and the floor each stay (nearly) whole."""
    from unsup3d.data.superpoints import superpoint_purity

    coord, color, label = _wall_with_a_door(np.random.default_rng(5))
    weight = Descriptors().region_color_weight
    assert weight > 0
    normals_alone = grow_regions(coord, None, 2.0, color, 0.0)
    with_colour = grow_regions(coord, None, 2.0, color, weight)
    for obj in (1, 2):  # door, picture: in the wall's region on normals alone
        wall_region = np.bincount(normals_alone[label == 0]).argmax()
        assert (normals_alone[label == obj] == wall_region).mean() > 0.9
    assert superpoint_purity(with_colour, label) > 0.97
    for part in range(4):  # each of the four is (nearly) one region of its own
        share = np.bincount(with_colour[label == part]).max() / (label == part).sum()
        assert share > 0.85, (part, share)
    with pytest.raises(ValueError, match="region_color_weight"):
        Descriptors(region_color_weight=-1.0)


def _region_means_loop(coord, region, descriptor, position_weight):
    """Each region's mean weighted descriptor and scaled position, one region at a time."""
    from unsup3d.pointdc.descriptor_pass import MERGE_WEIGHTS
    from unsup3d.pointdc.geometric import descriptor_columns

    scale = np.zeros(descriptor.shape[1])
    for name, sl in descriptor_columns().items():
        scale[sl] = MERGE_WEIGHTS.get(name, 0.0)
    ids = [r for r in np.unique(region) if r >= 0]
    rows = []
    for r in ids:
        m = region == r
        rows.append(np.r_[(descriptor[m] * scale).mean(0), position_weight * coord[m].mean(0)])
    return ids, np.array(rows)


def test_merge_regions_matches_kmeans_of_the_region_means() -> None:
    """Regions in three groups (alike descriptors, near each other) merge into those groups, the same
    partition as scikit-learn's K-means of the region means written out one region at a time; with
    more groups than regions each region stays alone; points without a region keep -1."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from unsup3d.pointdc.descriptor_pass import merge_regions

    rng = np.random.default_rng(5)
    region = np.repeat(np.arange(12), 40)
    group = region % 3  # regions 0, 3, 6, 9 are one group, ...
    coord = (rng.normal(size=(len(region), 3)) * 0.2 + group[:, None] * [3.0, 0.0, 0.0]).astype(np.float32)
    descriptor = rng.uniform(0, 0.1, (len(region), 14)).astype(np.float32)
    descriptor[:, 8] += group * 0.3  # the height column differs between the groups
    region[:5] = -1
    merged = merge_regions(coord, region, descriptor, 3, position_weight=0.2)
    assert (merged[:5] == -1).all() and set(np.unique(merged[5:])) == {0, 1, 2}
    ids, means = _region_means_loop(coord, region, descriptor, 0.2)
    ref = KMeans(3, n_init=10, random_state=0).fit_predict(means)
    ours = np.array([merged[region == r][0] for r in ids])
    assert adjusted_rand_score(ref, ours) == 1.0
    assert adjusted_rand_score(np.array(ids) % 3, ours) == 1.0
    for r in ids:  # a region is never split
        assert len(np.unique(merged[region == r])) == 1
    alone = merge_regions(coord, region, descriptor, 50)
    assert len(np.unique(alone[5:])) == 12 and alone.max() == 11
    np.testing.assert_array_equal(merge_regions(coord, region, descriptor, 3, 0.2), merged)  # deterministic


def test_pass_writes_merged_regions_only_when_asked(tmp_path: Path) -> None:
    """``merge_regions`` writes ``merged.npy`` (its settings recorded, so a missing file is redone);
    without it the settings, and so existing caches, are as before."""
    from unsup3d.pointdc.descriptor_pass import descriptors_problem, merge_regions

    dirs = _scenes(tmp_path, 1)
    assert "merge_regions" not in Descriptors().settings()
    cfg = Descriptors(k=8, merge_regions=4, merge_position_weight=0.5)
    run_descriptor_pass(dirs, cfg)
    d = dirs[0]
    merged = np.load(d / "merged.npy")
    expect = merge_regions(
        np.load(d / "coord.npy"), np.load(d / "region.npy"), np.load(d / "descriptor.npy"), 4, 0.5
    )
    np.testing.assert_array_equal(merged, expect)
    assert merged.max() < 4
    assert descriptors_problem(d, cfg.settings()) is None
    (d / "merged.npy").unlink()
    assert "merged.npy" in descriptors_problem(d, cfg.settings())
    run_descriptor_pass(dirs, cfg)
    np.testing.assert_array_equal(np.load(d / "merged.npy"), merged)
    with pytest.raises(ValueError, match="merge_regions"):
        Descriptors(merge_regions=0)


@pytest.mark.parametrize("recipe", ["pointdc_geometric_svc.yaml", "quickstart/pointdc_geometric_svc.yaml"])
def test_merge_weights_are_the_teacher_free_recipes(recipe: str) -> None:
    """merge_regions compares regions with the teacher-free SVC recipes' group weights: MERGE_WEIGHTS
    (the descriptor pass reads no recipe) must say what both recipes' ``descriptor_weights`` say."""
    import yaml

    from unsup3d.pointdc.descriptor_pass import MERGE_WEIGHTS

    path = Path(__file__).resolve().parents[2] / "experiments" / recipe
    weights = yaml.safe_load(path.read_text())["model"]["init_args"]["descriptor_weights"]
    assert {k: float(v) for k, v in weights.items()} == MERGE_WEIGHTS


def test_pass_is_redone_when_the_scenes_arrays_change(tmp_path: Path) -> None:
    """``descriptor.json`` records the arrays the regions and descriptors are computed from: a
    ``normal.npy`` added, replaced or removed since, or new colours, recomputes them on what the scene
    now holds."""
    from unsup3d.data.scene_folder import file_digest

    dirs = _scenes(tmp_path, 1)
    d, cfg = dirs[0], Descriptors(k=8)
    run_descriptor_pass(dirs, cfg)
    assert json.loads((d / "descriptor.json").read_text())["sources"]["normal"] is None
    estimated = np.load(d / "region.npy")
    coord, color = np.load(d / "coord.npy"), np.load(d / "color.npy")
    rng = np.random.default_rng(1)
    for _ in range(2):  # added, then replaced
        normal = rng.normal(size=(len(coord), 3)).astype(np.float32)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        np.save(d / "normal.npy", normal)
        run_descriptor_pass(dirs, cfg)
        recorded = json.loads((d / "descriptor.json").read_text())
        assert recorded["sources"]["normal"] == file_digest(d / "normal.npy")
        expect = grow_regions(coord, normal, cfg.region_c, color, cfg.region_color_weight)
        np.testing.assert_array_equal(np.load(d / "region.npy"), expect)
    (d / "normal.npy").unlink()
    run_descriptor_pass(dirs, cfg)
    np.testing.assert_array_equal(np.load(d / "region.npy"), estimated)
    grey = np.full_like(color, 128)
    np.save(d / "color.npy", grey)
    run_descriptor_pass(dirs, cfg)
    np.testing.assert_array_equal(
        np.load(d / "descriptor.npy"), point_descriptors(coord, grey, np.load(d / "region.npy"), k=8)
    )
    expect = grow_regions(coord, None, cfg.region_c, grey, cfg.region_color_weight)
    np.testing.assert_array_equal(np.load(d / "region.npy"), expect)
