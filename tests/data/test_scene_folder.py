"""Scene folders: atomic writes, pickle-free reads, degenerate scenes refused or skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unsup3d.data import scene_folder as sf


def _scene(n: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "coord": rng.random((n, 3)),
        "color": rng.integers(0, 256, (n, 3)),
        "segment": rng.integers(-1, 20, n),
        "superpoint": np.arange(n) // 7,
    }


def test_round_trip_with_dtypes(tmp_path: Path) -> None:
    """Arrays come back in the layout's dtypes with their values: float64 coordinates rounded to
    float32, int64 colours 0-255 as the same uint8 values, segment (with -1) and superpoint unchanged."""
    scene = _scene()
    scene["segment"][:3] = -1  # unlabelled points
    d = sf.write_scene(tmp_path / "train" / "scene0000_00", scene)
    back = sf.read_scene(d)
    assert back["coord"].dtype == np.float32 and back["color"].dtype == np.uint8
    assert back["segment"].dtype == np.int64 and back["superpoint"].dtype == np.int64
    np.testing.assert_array_equal(back["coord"], scene["coord"].astype(np.float32))
    np.testing.assert_allclose(back["coord"], scene["coord"], rtol=1e-7, atol=0)
    assert back["color"].tolist() == scene["color"].tolist()  # ints 0-255: no wrap-around
    assert back["segment"].tolist() == scene["segment"].tolist()
    np.testing.assert_array_equal(back["superpoint"], np.arange(100) // 7)
    assert sf.list_scenes(tmp_path, "train") == [d]
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_rewrite_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    d = tmp_path / "val" / "s"
    sf.write_scene(d, _scene(100))
    sf.write_scene(d, _scene(50))
    assert len(sf.read_scene(d)["coord"]) == 50
    assert [p.name for p in (tmp_path / "val").iterdir()] == ["s"]


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda s: {
                **s,
                "coord": s["coord"][:0],
                "color": s["color"][:0],
                "segment": s["segment"][:0],
                "superpoint": s["superpoint"][:0],
            },
            "no points",
        ),
        (lambda s: {**s, "coord": np.where(np.arange(100)[:, None] == 3, np.nan, s["coord"])}, "NaN"),
        (lambda s: {**s, "segment": s["segment"][:10]}, "segment has 10 rows"),
    ],
)
def test_degenerate_scene_is_refused_with_its_name(tmp_path: Path, change, words: str) -> None:
    with pytest.raises(ValueError, match=words) as err:
        sf.write_scene(tmp_path / "train" / "scene_bad", change(_scene()))
    assert "scene_bad" in str(err.value)
    assert not (tmp_path / "train" / "scene_bad").exists()


def test_pickled_array_is_not_loaded(tmp_path: Path) -> None:
    d = sf.write_scene(tmp_path / "train" / "s", _scene())
    np.save(d / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="evil.npy"):
        sf.read_scene(d)


def test_missing_array_names_the_file(tmp_path: Path) -> None:
    d = sf.write_scene(tmp_path / "train" / "s", _scene())
    with pytest.raises(FileNotFoundError, match="normal.npy"):
        sf.read_scene(d, keys=["coord", "normal"])


def test_usable_scenes_warns_and_skips(tmp_path: Path) -> None:
    good = sf.write_scene(tmp_path / "train" / "good", _scene())
    bad = tmp_path / "train" / "bad"
    bad.mkdir()
    np.save(bad / "coord.npy", np.zeros((0, 3), np.float32))
    with pytest.warns(UserWarning, match="bad"):
        assert sf.usable_scenes(sf.list_scenes(tmp_path, "train")) == [good]


def test_settings_key_changes_with_any_setting() -> None:
    a = sf.settings_key({"voxel": 0.02, "sp": "mesh"})
    assert a == sf.settings_key({"sp": "mesh", "voxel": 0.02})
    assert a != sf.settings_key({"voxel": 0.05, "sp": "mesh"})


def test_scene_normals_estimate_only_the_unusable_rows(tmp_path: Path) -> None:
    """normal.npy with a few NaN, infinite or zero rows: those rows are the floor's own normal (up, to
    the sign), estimated from the points; the others are the given ones at unit length."""
    rng = np.random.default_rng(1)
    n = 500
    coord = np.c_[rng.random((n, 2)) * 3, rng.normal(0, 0.002, n)].astype(np.float32)  # a flat floor
    given = rng.normal(size=(n, 3)).astype(np.float32) * 5  # anything, not unit
    bad = np.zeros(n, bool)
    bad[[3, 40, 41, 200]] = True
    given[3], given[40], given[41], given[200] = np.nan, np.inf, 0.0, 1e-9
    d = tmp_path / "s"
    d.mkdir()
    assert sf.scene_normals(d, coord) is None  # no file: estimate them all
    np.save(d / "normal.npy", given)
    with pytest.warns(UserWarning, match=r"4 of 500 normals are non-finite or zero"):
        out = sf.scene_normals(d, coord)
    assert out.dtype == np.float32 and out.shape == (n, 3)
    np.testing.assert_allclose(
        out[~bad], given[~bad] / np.linalg.norm(given[~bad], axis=1, keepdims=True), rtol=1e-6
    )
    np.testing.assert_allclose(np.abs(out[bad, 2]), 1.0, atol=1e-3)
    np.save(d / "normal.npy", given[:-1])
    with pytest.warns(UserWarning, match=r"shape \(499, 3\), not \(500, 3\)"):
        assert sf.scene_normals(d, coord) is None
    np.save(d / "normal.npy", np.full((n, 3), np.nan, np.float32))
    with pytest.warns(UserWarning, match="no usable normal among 500"):
        assert sf.scene_normals(d, coord) is None


def test_colours_in_0_1_are_refused_before_they_pass_as_black(tmp_path: Path) -> None:
    """Every reader divides colours by 255: float colours in [0, 1] would be near-black, silently."""
    from unsup3d.data.indoor_datamodules import SceneFolderDataModule

    scene = {k: v for k, v in _scene().items() if k != "superpoint"}  # the data module would add one
    sf.write_scene(tmp_path / "train" / "a", scene)
    assert sf.color_scale_problem(tmp_path / "train" / "a") is None  # uint8: 0-255 whatever its values
    np.save(tmp_path / "train" / "a" / "color.npy", scene["color"].astype(np.float32))  # float 0-255
    assert sf.color_scale_problem(tmp_path / "train" / "a") is None
    dark = np.full((len(scene["coord"]), 3), 0.004, dtype=np.float32)  # 1/255: a dark scene, 0-255
    np.save(tmp_path / "train" / "a" / "color.npy", dark * 255)
    assert sf.color_scale_problem(tmp_path / "train" / "a") is None
    np.save(tmp_path / "train" / "a" / "color.npy", scene["color"].astype(np.float64) / 255)  # 0-1
    problem = sf.color_scale_problem(tmp_path / "train" / "a")
    assert problem is not None and "near-black" in problem and "unsup3d import" in problem
    with pytest.raises(ValueError, match="near-black"):
        SceneFolderDataModule(root=str(tmp_path)).prepare_data()
    assert not (tmp_path / "train" / "a" / "superpoint.npy").exists()  # refused before any work
