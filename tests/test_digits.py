"""Digits: IDX files, 2D fields against analytic truth, heightfield solids, download, image observations."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.digits import (
    MNIST_FILES,
    DigitField,
    DigitSamplingConfig,
    download_mnist,
    find_idx_pairs,
    heightfield_solid,
    image_observations,
    load_digit_set,
    parse_labels,
    pixel_centres,
    sample_digit,
    split_samples,
)
from deepsdf_ad.data_prep.formats import DataError, read_idx, write_idx
from deepsdf_ad.metrics import iou, near_contour_error, psnr
from tests.helpers import assert_one_line_error, cli

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def disc_image(radius: float = 0.5, size: int = 28, centre=(0.0, 0.0), ramp: float = 0.2) -> np.ndarray:
    """An image whose intensity falls linearly with the signed distance to a circle (0.5 on the circle)."""
    r = np.linalg.norm(pixel_centres(size, size) - np.asarray(centre), axis=-1)
    return np.clip(0.5 - (r - radius) / ramp, 0.0, 1.0)


# ---- IDX -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x-images-idx3-ubyte", "x-images-idx3-ubyte.gz"])
def test_idx_round_trip_uint8(tmp_path, name):
    a = np.random.default_rng(0).integers(0, 256, size=(5, 28, 27), dtype=np.uint8)
    write_idx(tmp_path / name, a)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    header = gzip.decompress(raw)[:16] if name.endswith(".gz") else raw[:16]
    assert header[:4] == bytes([0, 0, 8, 3])  # magic 2051, as in MNIST's image files
    assert int.from_bytes(header[4:8], "big") == 5 and int.from_bytes(header[12:16], "big") == 27
    b = read_idx(tmp_path / name)
    assert b.dtype == np.uint8 and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64, np.int8])
def test_idx_round_trip_other_types(tmp_path, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    write_idx(tmp_path / "a.idx", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)


def _idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + np.asarray(a.shape, ">i4").tobytes() + a.tobytes()


@pytest.mark.parametrize("content, problem", [
    (b"\x00\x00\x08", "truncated IDX file"),
    (bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x02", "truncated IDX file"),
    (_idx_bytes(np.zeros((2, 4, 4), np.uint8))[:-5], "truncated IDX file"),
    (_idx_bytes(np.zeros((2, 4, 4), np.uint8)) + b"xx", "unexpected bytes"),
    (bytes([1, 2, 8, 3]) + b"\x00" * 40, "not an IDX file"),
    (bytes([0, 0, 0x42, 1]) + b"\x00" * 8, "not an IDX file"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt gzip data"),
    (gzip.compress(_idx_bytes(np.zeros((3, 4, 4), np.uint8)))[:-12], "corrupt gzip data"),
])
def test_corrupt_idx_is_a_one_line_data_error(tmp_path, content, problem):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as e:
        read_idx(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_corrupt_idx_in_one_line(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx / "t-labels-idx1-ubyte", np.zeros(3, np.uint8))
    (idx / "t-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-100])
    proc = cli("prep", "digits", idx, "--out", tmp_path / "data", "--quiet")
    assert_one_line_error(proc, "t-images-idx3-ubyte", "truncated IDX file")


def test_label_count_mismatch_and_missing_labels(tmp_path):
    write_idx(tmp_path / "a-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="no matching labels file"):
        find_idx_pairs(tmp_path)
    write_idx(tmp_path / "a-labels-idx1-ubyte", np.zeros(2, np.uint8))
    (prefix, images, labels), = find_idx_pairs(tmp_path)
    with pytest.raises(DataError, match="2 labels for 3 images"):
        load_digit_set(prefix, images, labels)


def test_parse_labels():
    assert parse_labels("0-4") == {0, 1, 2, 3, 4}
    assert parse_labels("1,3,7") == {1, 3, 7}
    assert parse_labels("0-2,9") == {0, 1, 2, 9}
    assert parse_labels(None) == set(range(10))
    for bad in ("5-2", "a", "10", "1-"):
        with pytest.raises(DataError):
            parse_labels(bad)


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"shared MNIST data not found at {MNIST}")
def test_real_mnist_test_set_reads():
    (prefix, images, labels), = find_idx_pairs(MNIST)
    ds = load_digit_set(prefix, images, labels)
    assert prefix == "t10k" and ds.images.shape == (10000, 28, 28)
    assert np.bincount(ds.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---- 2D fields -----------------------------------------------------------------------------------------
def test_disc_sdf_matches_the_analytic_sdf():
    radius, centre = 0.45, np.array([0.1, -0.05])
    field = DigitField(disc_image(radius, centre=centre), upsample=8)
    p = np.random.default_rng(0).uniform(-1, 1, size=(20000, 2))
    truth = np.linalg.norm(p - centre, axis=1) - radius
    err = np.abs(field.sdf(p) - truth)
    # half a fine cell (1/224) plus the bilinear interpolation of the image: far below one pixel (1/14)
    assert err.max() < 0.01
    assert err[np.abs(truth) < 0.1].mean() < 0.004
    # negative inside, positive outside
    assert (np.sign(field.sdf(p)) == np.sign(truth))[np.abs(truth) > 0.01].all()
    # contour points lie on the circle, and normals point outwards
    pts, normals = field.contour_samples(500, np.random.default_rng(1))
    np.testing.assert_allclose(np.linalg.norm(pts - centre, axis=1), radius, atol=0.005)
    radial = (pts - centre) / np.linalg.norm(pts - centre, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", normals, radial).min() > 0.95


def test_finer_transform_is_more_accurate():
    p = np.random.default_rng(2).uniform(-0.8, 0.8, size=(5000, 2))
    truth = np.linalg.norm(p, axis=1) - 0.5
    coarse = np.abs(DigitField(disc_image(), upsample=1).sdf(p) - truth).mean()
    fine = np.abs(DigitField(disc_image(), upsample=8).sdf(p) - truth).mean()
    assert fine < coarse / 3


def test_samples_concentrate_near_the_contour():
    cfg = DigitSamplingConfig(samples=4000)
    s = sample_digit(DigitField(disc_image()), cfg, np.random.default_rng(0))
    assert s.shape == (4000, 3) and s.dtype == np.float32
    assert np.abs(s[:, :2]).max() <= 1.0
    truth = np.linalg.norm(s[:, :2], axis=1) - 0.5
    np.testing.assert_allclose(s[:, 2], truth, atol=0.01)
    assert np.mean(np.abs(truth) < 0.05) > 0.6
    pos, neg = split_samples(s, "sdf")
    assert (pos[:, 2] > 0).all() and (neg[:, 2] <= 0).all() and len(pos) + len(neg) == len(s)


def test_height_samples_are_interpolated_intensities():
    img = disc_image()
    cfg = DigitSamplingConfig(samples=1000, field="height")
    s = sample_digit(DigitField(img), cfg, np.random.default_rng(0))
    assert s[:, 2].min() >= 0 and s[:, 2].max() <= 1
    # at pixel centres the interpolated intensity is the pixel itself
    centres = pixel_centres(28, 28).reshape(-1, 2)
    np.testing.assert_allclose(DigitField(img).intensity(centres), img.reshape(-1), atol=1e-9)


def test_blank_digit_is_refused():
    with pytest.raises(DataError, match="empty"):
        DigitField(np.zeros((28, 28), np.uint8))


def test_heightfield_solid_is_closed_and_outward():
    img = (disc_image() * 255).astype(np.uint8)
    mesh = heightfield_solid(img, base=0.05, height=0.3)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0
    # the volume is the base slab plus the integral of the (piecewise-bilinear) height
    assert 4 * 0.05 < mesh.volume < 4 * 0.05 + 0.3 * np.pi * 0.6**2
    assert np.isclose(mesh.vertices[:, 2].max(), 0.35, atol=1e-3)


# ---- image observations (2D reconstruct input) ---------------------------------------------------------
def test_masked_image_observations_bound_the_true_sdf():
    img = disc_image(0.5)
    known = np.ones((28, 28), bool)
    known[:, 14:] = False  # the right half is masked
    pts, lo, hi = image_observations(img, known, "sdf")
    assert (pts[:, 0] < 0.05).all()  # only the known (left) half is observed
    truth = np.linalg.norm(pts, axis=1) - 0.5
    tol = 0.01
    assert (lo <= truth + tol).all() and (truth <= hi + tol).all()
    assert (lo <= hi).all()
    exact = np.isclose(lo, hi)
    assert exact.mean() > 0.3  # most of the known region pins the distance down exactly
    full_pts, full_lo, full_hi = image_observations(img, np.ones((28, 28), bool), "sdf")
    assert len(full_pts) > len(pts)


def test_height_observations_are_known_pixels():
    img = disc_image()
    known = np.zeros((28, 28), bool)
    known[5:10, 5:10] = True
    pts, lo, hi = image_observations(img, known, "height")
    assert len(pts) == 25
    np.testing.assert_allclose(lo, img[known])
    np.testing.assert_allclose(hi, lo)
    with pytest.raises(DataError, match="masked everywhere"):
        image_observations(img, np.zeros((28, 28), bool), "sdf")


# ---- metrics ---------------------------------------------------------------------------------------------
def test_digit_metrics():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    b = np.zeros((10, 10), bool)
    b[:, :5] = True
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0
    assert np.isclose(iou(a, b), 25 / 75)
    true = np.linspace(-1, 1, 101)
    assert np.isclose(near_contour_error(true + 0.02, true, band=0.1), 0.02)
    assert np.isclose(near_contour_error(true + np.where(np.abs(true) < 0.1, 0.0, 5.0), true), 0.0)
    x = np.random.default_rng(0).random(1000)
    assert np.isclose(psnr(x + 0.1, x), 20.0)
    assert psnr(x, x) == float("inf")


# ---- download (a local HTTP server; never the internet) --------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def http_dir(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_md5_and_keeps_good_files(tmp_path, http_dir):
    served, url = http_dir
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    write_idx(served / "f-images-idx3-ubyte.gz", images)
    write_idx(served / "f-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3], np.uint8))
    files = {n: hashlib.md5((served / n).read_bytes()).hexdigest()
             for n in sorted(p.name for p in served.iterdir())}
    dest = tmp_path / "idx"
    paths = download_mnist(dest, base_urls=(url,), files=files, progress=False)
    assert [p.name for p in paths] == list(files)
    np.testing.assert_array_equal(load_digit_set(*find_idx_pairs(dest)[0]).images, images)
    # a file already present and intact is not fetched again (the server no longer has it)
    (served / "f-images-idx3-ubyte.gz").unlink()
    download_mnist(dest, base_urls=(url,), files=files, progress=False)
    # a wrong checksum is refused and nothing is written
    bad = {"f-labels-idx1-ubyte.gz": "0" * 32}
    with pytest.raises(DataError, match="checksum mismatch"):
        download_mnist(tmp_path / "idx2", base_urls=(url,), files=bad, progress=False)
    assert not (tmp_path / "idx2" / "f-labels-idx1-ubyte.gz").exists()
    with pytest.raises(DataError, match="download failed"):
        download_mnist(tmp_path / "idx3", base_urls=(url,), files={"missing.gz": "0" * 32}, progress=False)


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"shared MNIST data not found at {MNIST}")
def test_download_of_the_real_test_set_files_matches_their_md5(tmp_path, http_dir):
    served, url = http_dir
    names = [n for n in MNIST_FILES if n.startswith("t10k")]
    for n in names:
        (served / n).write_bytes((MNIST / n).read_bytes())
    dest = tmp_path / "idx"
    download_mnist(dest, base_urls=(url,), files={n: MNIST_FILES[n] for n in names}, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == sorted(names)


def test_cli_download_failure_is_one_line(tmp_path, http_dir, monkeypatch):
    _, url = http_dir  # serves nothing
    monkeypatch.setenv("DEEPSDF_AD_MNIST_URL", url)
    proc = cli("prep", "digits", tmp_path / "idx", "--out", tmp_path / "data", "--download", "--quiet")
    assert_one_line_error(proc, "download failed", "127.0.0.1")


def test_png_round_trip_with_mask(tmp_path):
    img = (disc_image() * 255).astype(np.uint8)
    alpha = np.full(img.shape, 255, np.uint8)
    alpha[:, 20:] = 0
    formats.save_png(tmp_path / "d.png", np.stack([img, img, img, alpha], axis=-1))
    gray, known = formats.load_png(tmp_path / "d.png")
    np.testing.assert_allclose(gray, img / 255.0, atol=1e-6)
    assert known[:, :20].all() and not known[:, 20:].any()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        formats.load_png(tmp_path / "bad.png")
