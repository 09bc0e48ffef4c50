"""The digits path through the real CLI on a small synthetic IDX file: prep digits -> train a few epochs ->
mesh PNG -> reconstruct from a masked PNG -> sample -> interpolate; and the heightfield variant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.digits import pixel_centres
from deepsdf_ad.data_prep.formats import write_idx
from tests.helpers import REPO, assert_one_line_error, cli

PRESET = REPO / "configs" / "digits_autodecoder.yaml"
TINY_2D = ["model.decoder.hidden=[32,32,32,32]", "model.decoder.latent_in=[2]", "model.latent.size=8",
           "train.shapes_per_batch=8", "train.samples_per_shape=256", "train.checkpoint_every=2",
           "mesh.resolution=40", "reconstruct.iterations=20", "reconstruct.samples=512"]
SETS = [a for kv in TINY_2D for a in ("--set", kv)]


def synthetic_digits(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Discs (label 0) and rings (label 1) of random size and position, 28x28 uint8, ink white on black."""
    rng = np.random.default_rng(seed)
    xy = pixel_centres(28, 28)
    images, labels = [], []
    for k in range(n):
        c = rng.uniform(-0.2, 0.2, size=2)
        r = np.linalg.norm(xy - c, axis=-1)
        radius = rng.uniform(0.35, 0.6)
        ink = np.clip(0.5 - (r - radius) / 0.15, 0, 1)
        if k % 2:  # a ring: cut a hole
            ink = np.minimum(ink, np.clip(0.5 + (r - 0.5 * radius) / 0.15, 0, 1))
        images.append((ink * 255).astype(np.uint8))
        labels.append(k % 2)
    return np.stack(images), np.array(labels, np.uint8)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("digits")
    idx = base / "idx"
    idx.mkdir()
    images, labels = synthetic_digits()
    write_idx(idx / "syn-images-idx3-ubyte.gz", images)
    write_idx(idx / "syn-labels-idx1-ubyte", labels)
    data, run = base / "data", base / "run"
    proc = cli("prep", "digits", idx, "--out", data, "--samples", "1024", "--test-fraction", "0.25",
               "--quiet", check=True)
    assert "24 of 24 digits ok" in proc.stdout
    cli("train", "--config", PRESET, "--data", data, "--out", run, "--epochs", "4", "--quiet", *SETS,
        check=True)
    return {"base": base, "idx": idx, "data": data, "run": run, "images": images}


def test_prep_digits_layout(digits):
    data = digits["data"]
    train = formats.read_split(data / "splits" / "train.json")
    test = formats.read_split(data / "splits" / "test.json")
    assert len(train) == 18 and len(test) == 6
    assert {c for _, c, _ in train} == {"0", "1"}
    _, cat, sid = train[0]
    assert sid.startswith("syn-") and len(sid.split("-")[1]) == 5  # zero-padded index in the IDX file
    pos, neg = formats.load_sdf_samples(data / "sdf" / cat / f"{sid}.npz")
    assert pos.shape[1] == 3 and (pos[:, 2] > 0).all() and (neg[:, 2] <= 0).all()
    assert np.abs(pos[:, :2]).max() <= 1.0


def test_mesh_sample_interpolate_reconstruct(digits, tmp_path):
    run = digits["run"]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(np.isfinite(r["loss"]) for r in rows)
    _, cat, sid = formats.read_split(digits["data"] / "splits" / "train.json")[0]
    png = tmp_path / "field.png"
    proc = cli("mesh", "--run", run, "--shape", sid, "--out", png, check=True)
    assert "contours" in proc.stdout
    assert Image.open(png).size == (80, 80)  # resolution 40, drawn at 2x
    assert_one_line_error(cli("mesh", "--run", run, "--shape", sid, "--out", tmp_path / "x.ply"), ".png")

    cli("sample", "--run", run, "--n", "4", "--out", tmp_path / "samples", "--quiet", check=True)
    assert (tmp_path / "samples" / "samples.png").is_file()
    assert len(json.loads((tmp_path / "samples" / "codes.json").read_text())["codes"]) == 4
    _, _, other = formats.read_split(digits["data"] / "splits" / "train.json")[-1]
    cli("interpolate", "--run", run, "--a", sid, "--b", other, "--steps", "5", "--out", tmp_path / "interp",
        "--quiet", check=True)
    img = Image.open(tmp_path / "interp" / "interpolation.png")
    assert img.size[0] > 4 * img.size[1]  # one row of 5

    # a held-out digit with its right half masked (alpha 0 = unknown) -> completed field picture
    _, tcat, tsid = formats.read_split(digits["data"] / "splits" / "test.json")[0]
    gray = digits["images"][int(tsid.split("-")[1])]
    alpha = np.full_like(gray, 255)
    alpha[:, 14:] = 0
    masked = tmp_path / "masked.png"
    Image.fromarray(np.stack([gray, gray, gray, alpha], axis=-1), "RGBA").save(masked)
    out = tmp_path / "completed.png"
    proc = cli("reconstruct", masked, "--run", run, "--out", out, check=True)
    assert out.is_file() and "reconstruct:" in proc.stdout


def test_heightfield_digits(digits, tmp_path):
    data = tmp_path / "height"
    cli("prep", "digits", digits["idx"], "--out", data, "--field", "height", "--samples", "512",
        "--limit", "6", "--quiet", check=True)
    solids = sorted((data / "heightfield").rglob("*.ply"))
    assert len(solids) == 6
    import trimesh

    solid = trimesh.load(solids[0], process=False)
    assert solid.is_watertight and solid.volume > 0
    # heightfield targets are intensities: the distance loss would be wrong, and the CLI says so
    proc = cli("train", "--config", PRESET, "--data", data, "--out", tmp_path / "r", "--epochs", "1", *SETS)
    assert_one_line_error(proc, "train.loss=l1")
    cli("train", "--config", PRESET, "--data", data, "--out", tmp_path / "r", "--epochs", "2", "--quiet",
        *SETS, "--set", "train.loss=l1", check=True)
    cli("mesh", "--run", tmp_path / "r", "--shape", solids[0].stem, "--out", tmp_path / "h.png", check=True)


def test_prep_digits_again_skips_what_is_done(digits, tmp_path):
    data = tmp_path / "again"
    args = ("prep", "digits", digits["idx"], "--out", data, "--samples", "256", "--limit", "6", "--quiet")
    cli(*args, check=True)
    before = {p: p.stat().st_mtime_ns for p in (data / "sdf").rglob("*.npz")}
    cli(*args, check=True)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["summary"]["skipped_unchanged"] == 6
    assert {p: p.stat().st_mtime_ns for p in (data / "sdf").rglob("*.npz")} == before
