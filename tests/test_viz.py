"""viz: headless screenshots, error maps, SDF slices, training plots, and the CLI commands around them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from deepsdf_ad.cli import main
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.viz.render import render_to_array
from deepsdf_ad.viz.scene import as_item, color_by_distance, colormap
from deepsdf_ad.viz.slices import slice_image, sphere_sdf

WHITE = np.array([255, 255, 255])


def _foreground(img: np.ndarray) -> np.ndarray:
    return np.any(np.abs(img.astype(int) - WHITE) > 8, axis=2)


@pytest.fixture(scope="module")
def sphere_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("viz") / "sphere.ply"
    trimesh.creation.icosphere(3, 0.5).export(path)
    return path


@pytest.mark.parametrize("renderer", ["raycast", "pyrender"])
def test_screenshot_of_a_sphere(sphere_file, tmp_path, renderer, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "sphere.png"
    assert main(["view", str(sphere_file), "--screenshot", str(out), "--size", "160x120", "--renderer",
                 renderer, "--azimuth", "45", "--elevation", "10"]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (120, 160, 3)
    fg = _foreground(img)
    assert fg[50:62, 74:86].all(), "the sphere is at the centre"
    for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert (img[y, x] == WHITE).all(), "corners are background"
    # framed: the sphere fills most of the height but touches no border of the picture above the label
    rows = np.nonzero(fg[:, 40:120].any(axis=1))[0]
    assert rows.min() > 0 and rows.max() - rows.min() > 60


def test_renderers_agree_on_the_silhouette():
    a = trimesh.creation.icosphere(2, 0.3)
    b = trimesh.creation.icosphere(2, 0.12)
    b.apply_translation([0.0, 0.55, 0.3])  # up and to the right, seen from azimuth 0
    mesh = trimesh.util.concatenate([a, b])
    kw = dict(size=(120, 100), azimuth=0.0, elevation=0.0, labels=False)
    ray = _foreground(render_to_array([mesh], renderer="raycast", **kw))
    gl = _foreground(render_to_array([mesh], renderer="pyrender", **kw))
    assert (ray != gl).mean() < 0.01
    ys, xs = np.nonzero(ray)
    small = xs > 0.5 * (xs.min() + xs.max()) + 20
    assert ys[small].mean() < ys.mean(), "the small sphere is drawn upper right"


def test_grid_and_points(tmp_path):
    meshes = [trimesh.creation.icosphere(2, r) for r in (0.2, 0.3, 0.4)]
    cloud = trimesh.PointCloud(trimesh.creation.icosphere(3, 0.4).vertices)
    img = render_to_array([*meshes, cloud], size=(200, 160), layout="grid", renderer="raycast", point_size=2)
    assert img.shape == (160, 200, 3)
    fg = _foreground(img)
    cells = [fg[:68, :100], fg[:68, 100:], fg[80:148, :100], fg[80:148, 100:]]
    counts = [c.sum() for c in cells]
    assert all(c > 20 for c in counts)
    assert counts[0] < counts[1] < counts[2], "one scale for all cells: bigger spheres look bigger"


def test_color_by_distance_of_a_mesh_against_itself_is_uniform(sphere_file, tmp_path):
    sphere = as_item(sphere_file)
    [same], vmax = color_by_distance([sphere], sphere_file)
    assert np.abs(same.distances).max() < 1e-6
    assert np.allclose(same.colors, colormap(np.zeros(1), vmax)[0])
    moved = trimesh.creation.icosphere(3, 0.5)
    moved.apply_translation([0.3, 0.0, 0.0])
    [other], _ = color_by_distance([as_item(moved)], sphere_file)
    assert np.ptp(other.colors, axis=0).max() > 0.3, "a different mesh gets different colours"

    out = tmp_path / "err.png"
    assert main(["view", str(sphere_file), "--color-by-distance", str(sphere_file), "--screenshot", str(out),
                 "--size", "240x160", "--renderer", "raycast"]) == 0
    img = np.asarray(Image.open(out).convert("RGB")).astype(float)
    picture = img[:130, :150]  # above the label, left of the colour bar
    shape_px = picture[_foreground(picture.astype(np.uint8))]
    chroma = shape_px / shape_px.sum(axis=1, keepdims=True)  # lighting scales, the colour stays
    interior = shape_px.sum(axis=1) > 60  # not the anti-aliasing-free rim mixed with white
    assert np.ptp(chroma[interior], axis=0).max() < 0.03
    top = np.round(colormap(np.ones(1), 1.0)[0] * 255)
    bar = img[:, 180:]
    assert (np.abs(bar - top).sum(axis=2) < 12).any(), "the colour bar is drawn"


def test_slice_zero_contour_where_the_sphere_is(tmp_path):
    r = 0.5
    s = slice_image(sphere_sdf(r), "z", 0.0, tmp_path / "slice.png", resolution=128)
    assert s.values.shape == (128, 128) and s.values.min() < 0 < s.values.max()
    img = np.asarray(Image.open(s.path).convert("RGB")).astype(int)
    x0, y0, x1, y1 = s.axes_box

    def pixel(u, v):
        return (int(round(x0 + (u + 1) / 2 * (x1 - x0))), int(round(y1 - (v + 1) / 2 * (y1 - y0))))

    def dark_near(u, v, tol=2):
        x, y = pixel(u, v)
        patch = img[y - tol:y + tol + 1, x - tol:x + tol + 1]
        return (patch.sum(axis=2) < 150).any()

    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    assert all(dark_near(r * np.cos(a), r * np.sin(a)) for a in angles)
    for rr in (0.3 * r, 0.7 * r, 1.3 * r, 1.6 * r):
        assert not any(dark_near(rr * np.cos(a), rr * np.sin(a)) for a in angles), rr
    # inside blue, outside red
    xi, yi = pixel(0.0, 0.0)
    xo, yo = pixel(0.95, 0.95)
    assert img[yi, xi, 2] > img[yi, xi, 0] and img[yo, xo, 0] > img[yo, xo, 2]


def test_slice_of_a_2d_field_and_off_centre_planes(tmp_path):
    s = slice_image(sphere_sdf(0.3, (0.2, -0.1)), dim=2, resolution=64, out=tmp_path / "f.png")
    assert s.axis_names == ("x", "y")
    iy, ix = np.unravel_index(np.argmin(s.values), s.values.shape)
    assert abs(np.linspace(-1, 1, 64)[ix] - 0.2) < 0.05 and abs(np.linspace(-1, 1, 64)[iy] + 0.1) < 0.05
    s = slice_image(sphere_sdf(0.5), "x", 0.4, resolution=64)
    assert s.path is None and s.axis_names == ("y", "z")
    assert s.values.min() == pytest.approx(0.4 - 0.5, abs=0.02)  # nearest the centre: (0.4, 0, 0)
    with pytest.raises(DataError):
        slice_image(sphere_sdf(0.5), "z", 1.5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 3D run trained for a few epochs on two procedural shapes (enough to exercise the commands)."""
    from deepsdf_ad.config import load_config
    from deepsdf_ad.data_prep.meshes import SamplingConfig
    from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes
    from deepsdf_ad.data_prep.shapes import write_family
    from deepsdf_ad.train import train

    root = tmp_path_factory.mktemp("vizrun")
    write_family(root / "src", families=("bottle",), per_family=3, seed=1)
    prep_meshes(root / "src", root / "data",
                PrepConfig(SamplingConfig(samples=3000), test_fraction=0.34, seed=0), progress=False)
    cfg = load_config(Path(__file__).parents[1] / "configs" / "shapes_small.yaml",
                      ["model.decoder.hidden=[32,32,32,32,32,32]", "model.latent.size=8",
                       "train.shapes_per_batch=2", "train.samples_per_shape=512", "train.checkpoint_every=3",
                       "mesh.resolution=32"])
    train(cfg, root / "data", root / "run", epochs=3, device="cpu", progress=False)
    return root / "run"


def test_slice_and_plot_commands_on_a_run(tiny_run, tmp_path, capsys):
    keys = json.loads((tiny_run / "shapes.json").read_text())["keys"]
    out = tmp_path / "slice.png"
    assert main(["slice", "--run", str(tiny_run), "--shape", keys[0], "--axis", "y", "--at", "0.1", "--out",
                 str(out), "--resolution", "32", "--device", "cpu"]) == 0
    assert Image.open(out).size[0] > 100
    other = tmp_path / "other"  # a second run: only its metrics matter to plot
    other.mkdir()
    (other / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "loss": 1.0 / e, "sdf_loss": 0.9 / e, "lr_decoder": 1e-3,
                    "lr_latent": 2e-3}) + "\n"
        for e in range(1, 6)))
    plot = tmp_path / "curves.png"
    assert main(["plot", str(tiny_run), str(other), "--out", str(plot)]) == 0
    im = np.asarray(Image.open(plot).convert("RGB"))
    assert plot.stat().st_size > 5000 and _foreground(im).mean() > 0.02
    assert "plot: 2 run(s)" in capsys.readouterr().out


def test_curve_legends_name_runs_by_the_shortest_ending_and_colour_methods_by_family(tmp_path):
    """The training curves of an experiment: 'autodecoder/seed_0', not a path, and one colour family per
    method (its seeds in shades)."""
    from deepsdf_ad.viz.plots import run_colors, run_labels

    seeds = [tmp_path / m / f"seed_{k}" for m in ("autodecoder", "autoencoder") for k in range(3)]
    labels = run_labels(seeds)
    assert labels == [f"{m}/seed_{k}" for m in ("autodecoder", "autoencoder") for k in range(3)]
    assert run_labels([tmp_path / "a" / "run", tmp_path / "b" / "other"]) == ["run", "other"]
    assert run_labels([tmp_path / "a" / "run", tmp_path / "b" / "run"]) == ["a/run", "b/run"]
    colors = np.array([c[:3] for c in run_colors(labels)])
    assert (colors[:3, 2] > colors[:3, 0]).all() and (colors[3:, 0] > colors[3:, 2]).all()  # blues, oranges
    assert len({tuple(c) for c in colors}) == 6  # every seed its own shade
    assert len({tuple(c) for c in run_colors(["run", "other"])}) == 2


def test_slice_of_the_truth_on_a_shared_scale(tiny_run, tmp_path, capsys):
    """--truth DATA slices the shape's ground truth: negative inside the bottle near the axis, positive at the
    corners; --vmax sets the colour range."""
    from deepsdf_ad.viz.slices import truth_sdf

    keys = json.loads((tiny_run / "shapes.json").read_text())["keys"]
    data = tiny_run.parent / "data"
    fn = truth_sdf(data, keys[0], 3)
    v = fn(np.array([[0.0, 0.0, 0.0], [0.95, 0.95, 0.95]], np.float32))
    assert v[0] < 0 < v[1]
    out = tmp_path / "truth.png"
    assert main(["slice", "--run", str(tiny_run), "--shape", keys[0], "--axis", "x", "--truth", str(data),
                 "--vmax", "0.25", "--out", str(out), "--resolution", "32"]) == 0
    assert Image.open(out).size[0] > 100 and "slice: sdf in [-" in capsys.readouterr().out


def test_view_a_run_shape(tiny_run, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    keys = json.loads((tiny_run / "shapes.json").read_text())["keys"]
    out = tmp_path / "shape.png"
    rc = main(["view", "--run", str(tiny_run), "--shape", keys[0], "--screenshot", str(out),
               "--size", "96x80", "--renderer", "raycast", "--device", "cpu"])
    if rc == 2:  # three epochs may leave no zero crossing: that must be the one-line error, not a crash
        return
    assert rc == 0 and Image.open(out).size == (96, 80)


@pytest.mark.parametrize("argv, message", [
    (["view", "missing.ply", "--screenshot", "x.png"], "missing.ply: file not found"),
    (["view", "missing.ply"], "missing.ply: file not found"),  # before the display check
    (["view", "{sphere}"], "add --screenshot OUT.png"),
    (["view", "{sphere}", "--screenshot", "x.bmp"], "unsupported image type"),
    (["view", "--shape", "a", "--screenshot", "x.png"], "--shape needs --run"),
    (["plot", "{tmp}", "--out", "x.png"], "no training metrics"),
    (["slice", "--run", "{tmp}", "--shape", "a", "--out", "x.png"], "not a run folder"),
])
def test_bad_input_is_one_line(argv, message, sphere_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = [a.format(sphere=sphere_file, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepsdf-ad: error:") and message in err and "\n" not in err
    assert not list(tmp_path.glob("*.png"))


def test_the_library_imports_viz_only_lazily_from_the_cli():
    # which modules may import viz at all: tests/test_architecture.py; here: the CLI does so only when drawing
    code = ("import sys, deepsdf_ad.cli, deepsdf_ad.train, deepsdf_ad.meshing; "
            "sys.exit(any(m == 'deepsdf_ad.viz' or m.startswith('deepsdf_ad.viz.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
