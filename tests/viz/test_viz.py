"""unsup3d.viz: colours, scene pictures (checked pixel by pixel), confusion matrices."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from unsup3d.viz import (
    colorize,
    draw_confusion,
    draw_scene,
    draw_scenes,
    figure_to_array,
    label_colors,
    perspective_project,
    row_normalize,
    value_colors,
)

RED = np.array([255, 0, 0], dtype=np.uint8)
BLUE = np.array([0, 0, 255], dtype=np.uint8)
GREEN = np.array([0, 160, 0], dtype=np.uint8)
GREY = np.array([128, 128, 128], dtype=np.uint8)


def _is(img: np.ndarray, colour: np.ndarray, tol: int = 60) -> np.ndarray:
    """Pixels within tol of colour in every channel."""
    return (np.abs(img[..., :3].astype(int) - colour.astype(int)) <= tol).all(axis=-1)


def _pixel(fig: Figure, ax_index: int, xy: tuple[float, float], img: np.ndarray) -> np.ndarray:
    """The image pixel under data point xy of fig.axes[ax_index] (after the figure was rendered)."""
    x, y = fig.axes[ax_index].transData.transform(xy)
    return img[int(img.shape[0] - y), int(x)]


def _frame(half: float) -> np.ndarray:
    """The 8 corners of a cube, to pin a scene's bounding box."""
    return np.array([[sx, sy, sz] for sx in (-half, half) for sy in (-half, half) for sz in (-half, half)])


# ----------------------------------------------------------------------------------------- colours


def test_label_colors_deterministic_distinct_and_grey_ignore() -> None:
    ids = np.arange(20)
    first = label_colors(ids)
    assert first.dtype == np.uint8 and first.shape == (20, 3)
    # Same id, same colour, whatever else is in the call and in whatever order.
    perm = np.random.default_rng(0).permutation(np.repeat(ids, 3))
    np.testing.assert_array_equal(label_colors(perm), first[perm])
    np.testing.assert_array_equal(label_colors(np.array([7])), first[7:8])
    d = np.linalg.norm(first[:, None].astype(float) - first[None].astype(float), axis=-1)
    assert d[~np.eye(20, dtype=bool)].min() > 40.0
    for background in (GREY, np.array([255, 255, 255])):
        assert np.linalg.norm(first.astype(float) - background, axis=1).min() > 40.0
    out = label_colors(np.array([3, -1, 255, 3]), ignore_index=-1)
    np.testing.assert_array_equal(out[1], GREY)
    assert not (out[2] == GREY).all()
    np.testing.assert_array_equal(label_colors(np.array([255, 2]), ignore_index=255)[0], GREY)


def test_label_colors_beyond_palette_and_num_colors() -> None:
    many = np.arange(300)
    colours = label_colors(many)
    np.testing.assert_array_equal(label_colors(many[::-1]), colours[::-1])
    assert len(np.unique(colours, axis=0)) == 300
    assert not _is(colours, GREY, tol=10).any()
    with pytest.raises(ValueError, match="outside"):
        label_colors(np.array([0, 5, 20]), num_colors=20)
    np.testing.assert_array_equal(label_colors(np.array([-1, 19]), num_colors=20)[0], GREY)
    with pytest.raises(ValueError, match="integers"):
        label_colors(np.array([0.5]))


def test_value_colors_follow_the_colormap_monotonically() -> None:
    values = np.linspace(-3.0, 7.0, 50)
    rgb = value_colors(values)
    reference = np.round(matplotlib.colormaps["viridis"](np.linspace(0, 1, 50))[:, :3] * 255)
    np.testing.assert_allclose(rgb, reference, atol=1)
    # viridis rises monotonically in lightness: so must the colours of rising values.
    lightness = rgb.astype(float) @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(lightness) > 0)
    clipped = value_colors(np.array([-10.0, 0.0, 1.0, 10.0, np.nan]), vmin=0.0, vmax=1.0, cmap="magma")
    np.testing.assert_array_equal(clipped[0], clipped[1])
    np.testing.assert_array_equal(clipped[3], clipped[2])
    np.testing.assert_array_equal(clipped[4], GREY)


def test_colorize_dispatches_on_dtype_and_shape() -> None:
    ids = np.array([0, 1, -1, 4])
    np.testing.assert_array_equal(colorize(ids), label_colors(ids))
    np.testing.assert_array_equal(colorize(torch.tensor(ids)), label_colors(ids))
    floats = np.array([0.0, 0.5, 1.0])
    np.testing.assert_array_equal(colorize(floats), value_colors(floats))
    rgb8 = np.array([[1, 2, 3], [250, 0, 9]], dtype=np.uint8)
    np.testing.assert_array_equal(colorize(rgb8), rgb8)
    np.testing.assert_array_equal(colorize(np.array([[1.0, 0.0, 0.5, 1.0]])), [[255, 0, 128]])
    np.testing.assert_array_equal(colorize(np.array([[200.0, 10.0, 0.0]])), [[200, 10, 0]])
    with pytest.raises(ValueError, match="shape"):
        colorize(np.zeros((4, 2)))


# ------------------------------------------------------------------------------------------ scenes


def test_top_view_png_has_red_left_and_blue_right(tmp_path) -> None:
    g = np.linspace(-10, 10, 41)
    xx, yy = np.meshgrid(g, g)
    coord = np.stack([xx.ravel(), yy.ravel(), np.zeros(xx.size)], axis=1)
    rgb = np.where((coord[:, 0] < 0)[:, None], RED, BLUE).astype(np.uint8)
    path = tmp_path / "made" / "on" / "demand" / "top.png"
    fig = draw_scene(coord, rgb, path, view="top", figsize=(4, 4), point_size=60)
    png = np.asarray(Image.open(path).convert("RGB"))
    assert png.shape == (400, 400, 3)
    assert (png < 250).any(axis=-1).mean() > 0.2  # not blank
    for x in (-8.0, -5.0, -2.0):
        for y in (-6.0, 0.0, 6.0):
            assert _is(_pixel(fig, 0, (x, y), png), RED).all(), (x, y)
            assert _is(_pixel(fig, 0, (-x, y), png), BLUE).all(), (-x, y)
    # Left of the axes' centre there is red and no blue; right of it, the reverse.
    x0, y0 = fig.axes[0].transData.transform((0.0, 0.0)).astype(int)
    left, right = png[:, : x0 - 5], png[:, x0 + 5 :]
    assert _is(left, RED).sum() > 1000 and _is(left, BLUE).sum() == 0
    assert _is(right, BLUE).sum() > 1000 and _is(right, RED).sum() == 0


@pytest.mark.parametrize("high_colour", ["green", "red"])
def test_top_view_shows_the_highest_point(high_colour: str) -> None:
    rng = np.random.default_rng(1)
    blob = rng.uniform(-0.3, 0.3, size=(200, 2))
    high = np.column_stack([blob, np.full(200, 2.0)])
    low = np.column_stack([blob[::-1], np.full(200, -2.0)])
    coord = np.concatenate([high, low, _frame(5.0)])  # high listed first: drawing order must come from z
    top, bottom = (GREEN, RED) if high_colour == "green" else (RED, GREEN)
    rgb = np.concatenate([np.tile(top, (200, 1)), np.tile(bottom, (200, 1)), np.tile(GREY, (8, 1))])
    fig = draw_scene(coord, rgb, view="top", figsize=(3, 3), point_size=40)
    img = figure_to_array(fig)
    assert _is(_pixel(fig, 0, (0.0, 0.0), img), top, tol=40).all()
    assert _is(img, bottom, tol=40).sum() == 0


@pytest.mark.parametrize("near_colour", ["red", "blue"])
def test_perspective_draws_near_points_over_far_ones(near_colour: str) -> None:
    elev, azim = 35.0, 200.0
    e, a = np.deg2rad(elev), np.deg2rad(azim)
    towards_camera = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    rng = np.random.default_rng(2)

    def ball(centre: np.ndarray, radius: float, n: int) -> np.ndarray:
        d = rng.normal(size=(n, 3))
        d *= (radius * rng.uniform(0, 1, (n, 1)) ** (1 / 3)) / np.linalg.norm(d, axis=1, keepdims=True)
        return centre + d

    # The frame pins the box centre at 0, so the camera looks along -towards_camera through both balls:
    # a big one 6 m towards the camera and a small one at the centre, which it must hide.
    near = ball(6.0 * towards_camera, 1.0, 2000)
    far = ball(np.zeros(3), 0.3, 200)
    coord = np.concatenate([near, far, _frame(10.0)])  # far listed after near: order must come from depth
    front, back = (RED, BLUE) if near_colour == "red" else (BLUE, RED)
    rgb = np.concatenate([np.tile(front, (2000, 1)), np.tile(back, (200, 1)), np.tile(GREY, (8, 1))])
    fig = draw_scene(coord, rgb, view="perspective", figsize=(4, 4), point_size=30, elev=elev, azim=azim)
    img = figure_to_array(fig)
    assert _is(_pixel(fig, 0, (0.0, 0.0), img), front).all()
    assert _is(img, front).sum() > 200
    assert _is(img, back).sum() == 0


def test_subsampling_is_seeded_and_shared_by_panels() -> None:
    rng = np.random.default_rng(3)
    coord = rng.normal(size=(5000, 3))
    coord[7] = np.nan  # non-finite points are left out, not drawn at odd places
    ids = rng.integers(0, 5, 5000)

    def offsets(fig: Figure, i: int = 0) -> np.ndarray:
        return np.asarray(fig.axes[i].collections[0].get_offsets())

    small = draw_scene(coord, ids, view="top", max_points=1000, figsize=(2, 2), seed=5)
    assert len(offsets(small)) == 1000
    np.testing.assert_array_equal(offsets(small), offsets(draw_scene(coord, ids, view="top", max_points=1000,
                                                                     figsize=(2, 2), seed=5)))
    other = draw_scene(coord, ids, view="top", max_points=1000, figsize=(2, 2), seed=6)
    assert not np.array_equal(np.sort(offsets(small), axis=0), np.sort(offsets(other), axis=0))
    assert len(offsets(draw_scene(coord, ids, view="top", figsize=(2, 2)))) == 4999
    many = draw_scenes(coord, [ids, coord[:, 2], None], ["ids", "z", "height"], view="both",
                       max_points=700, figsize=(6, 4))
    panels = many.axes[:6]  # the colour bars come after the panels
    assert [ax.get_title() for ax in panels[:2]] == ["ids | top view", "z | top view"]
    for ax in panels[1:3]:
        np.testing.assert_array_equal(ax.collections[0].get_offsets(), panels[0].collections[0].get_offsets())


def test_both_views_png_size_and_bad_input(tmp_path) -> None:
    coord = np.random.default_rng(4).uniform(-5, 5, size=(300, 3))
    fig = draw_scene(coord, None, tmp_path / "both.png", title="scene", dpi=50)
    assert Image.open(tmp_path / "both.png").size == (600, 300)
    assert fig.axes[0].get_title() == "top view" and fig.axes[1].get_title() == "perspective"
    with pytest.raises(ValueError, match="coord"):
        draw_scene(coord[:, :2])
    with pytest.raises(ValueError, match="299 entries for 300 points"):
        draw_scene(coord, np.zeros(299, dtype=int))
    with pytest.raises(ValueError, match="view"):
        draw_scene(coord, view="side")
    with pytest.raises(ValueError, match="titles"):
        draw_scenes(coord, [None, None], ["one"])


# ---------------------------------------------------------------------------------------- confusion


def test_confusion_identity_has_a_bright_diagonal() -> None:
    c = 20
    names = [f"class{i}" for i in range(c)]
    confusion = np.diag(np.arange(1, c + 1) * 10)
    confusion[3] = 0  # a class never seen: its row must stay zero, not NaN
    fig = draw_confusion(confusion, names, title="identity")
    shown = np.asarray(fig.axes[0].images[0].get_array())
    expected = np.eye(c)
    expected[3, 3] = 0.0
    np.testing.assert_array_equal(shown, expected)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == names
    img = figure_to_array(fig).astype(float).sum(axis=-1)
    # Off the cell centre (where the value is written): diagonal cells dark blue, the rest near white.
    for i in (0, 9, 19):
        diag = img[tuple(_cell(fig, img, i, i))]
        off = img[tuple(_cell(fig, img, i, (i + 5) % c))]
        assert diag < 0.5 * off
    counts = draw_confusion(confusion, normalize=False)
    np.testing.assert_array_equal(np.asarray(counts.axes[0].images[0].get_array()), confusion)
    with pytest.raises(ValueError, match="square"):
        draw_confusion(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="class names"):
        draw_confusion(np.eye(3), ["a", "b"])


def test_confusion_is_normalised_along_the_ground_truth_rows() -> None:
    """Rows are the ground-truth classes: [[3, 1], [0, 4]] becomes [[3/4, 1/4], [0, 4/4]] (worked out by
    hand; dividing by the column sums would give [[1, 1/5], [0, 4/5]]), drawn with row 0 at the top."""
    confusion = np.array([[3, 1], [0, 4]])
    expected = np.array([[0.75, 0.25], [0.0, 1.0]])
    np.testing.assert_allclose(row_normalize(confusion), expected)
    fig = draw_confusion(confusion, ["a", "b"], annotate=False)
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()), expected)
    img = figure_to_array(fig).astype(float).sum(axis=-1)
    # Darker is larger ("Blues"): 1.0 at (1, 1) darkest, then 0.75 at (0, 0), 0.25 at (0, 1), 0 at (1, 0).
    brightness = [img[_cell(fig, img, i, j)] for i, j in ((1, 1), (0, 0), (0, 1), (1, 0))]
    assert brightness == sorted(brightness) and len(set(brightness)) == 4, brightness
    assert brightness[-1] > 3 * 250  # the zero cell is (near) white


def _cell(fig: Figure, img: np.ndarray, row: int, col: int) -> tuple[int, int]:
    x, y = fig.axes[0].transData.transform((col + 0.3, row - 0.3))
    return int(img.shape[0] - y), int(x)


def test_figure_to_array_matches_the_png() -> None:
    fig = draw_scene(np.random.default_rng(5).normal(size=(200, 3)), view="top", figsize=(3, 2), dpi=80)
    pixels = figure_to_array(fig)
    assert pixels.dtype == np.uint8 and pixels.shape == (160, 240, 3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    np.testing.assert_array_equal(pixels, np.asarray(Image.open(buf).convert("RGB")))
    # A figure without an Agg canvas (as built by Figure()) goes through PNG and gives the same pixels.
    plain = Figure(figsize=(2, 1), dpi=50)
    plain.add_subplot().plot([0, 1], [1, 0], color="red")
    out = figure_to_array(plain)
    assert out.shape == (50, 100, 3) and _is(out, RED).any()


def test_perspective_projection_orientation() -> None:
    # Camera behind the origin on -x, 30 degrees up, looking along +x as a driver would (z up, y left).
    pts = np.array([[0, 0, 1.5], [0, 4, 0], [0, -4, 0], [0, 0, 3], [-4, 0, 0], [4, 0, 0]], dtype=float)
    uv, depth = perspective_project(pts, elev=30.0, azim=180.0, distance=3.0)
    np.testing.assert_allclose(uv[0], [0.0, 0.0], atol=1e-12)  # the box centre is on the optical axis
    assert uv[1, 0] < 0 < uv[2, 0]  # +y (left of the driver) is on the left of the picture
    assert uv[3, 1] > 0  # up is up, seen from above the centre (0, 0, 1.5)
    assert uv[4, 1] < 0 < uv[5, 1]  # looking down: the near ground is low in the picture, the far ground high
    half_diagonal = np.linalg.norm([8.0, 8.0, 3.0]) / 2
    centre = np.array([0.0, 0.0, 1.5])
    camera = centre + 3.0 * half_diagonal * np.array([-np.cos(np.pi / 6), 0.0, np.sin(np.pi / 6)])
    view_dir = (centre - camera) / np.linalg.norm(centre - camera)
    np.testing.assert_allclose(depth, (pts - camera) @ view_dir)
    with pytest.raises(ValueError, match="distance"):
        perspective_project(pts, distance=1.0)
