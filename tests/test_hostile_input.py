"""Issue 9: hostile and broken input. Property-based (hypothesis) cases feed the readers of point clouds,
meshes, IDX files, images, sample files and scans, and ``prep``, ``scan`` and ``reconstruct``, with random
bytes, truncated files, damaged headers, NaN/Inf coordinates, no points, duplicate points and coordinates of
1e30: each ends in a :class:`DataError` (one line naming the file: the CLI prints it and exits 2) or in the
documented clean handling (points with NaN or Inf dropped, counted on stderr). Many random cases run
in-process; a handful go through the real CLI; 10^7 points run once."""

from __future__ import annotations

import gzip
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.meshes import SamplingConfig, load_mesh
from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_one
from deepsdf_ad.data_prep.scans import CameraConfig, load_scan, scan_mesh
from tests.helpers import assert_one_line_error, cli, train_tiny_sphere_run

CASES = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FEW = settings(CASES, max_examples=8)

HOSTILE_FLOATS = st.one_of(
    st.floats(-10, 10, allow_nan=False),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, 1e-30]),
)
POINT_ARRAYS = st.one_of(
    arrays(np.float64, st.tuples(st.integers(0, 40), st.just(3)), elements=HOSTILE_FLOATS),
    # a plausible cloud with a few NaN/Inf rows
    st.builds(lambda a, k, bad: np.concatenate([a, np.full((k, 3), bad)]),
              arrays(np.float64, st.tuples(st.integers(4, 40), st.just(3)), elements=st.floats(-1, 1)),
              st.integers(0, 5), st.sampled_from([np.nan, np.inf, -np.inf])),
    # one point repeated (all duplicates), possibly with a few stragglers
    st.builds(lambda p, n, extra: np.concatenate([np.tile(p, (n, 1)), extra]),
              arrays(np.float64, (1, 3), elements=st.floats(-1, 1)), st.integers(1, 30),
              arrays(np.float64, st.tuples(st.integers(0, 3), st.just(3)), elements=HOSTILE_FLOATS)),
)


def expect_data_error_or(fn, path: Path, *args):
    """``fn(path)``: its result, or None after a DataError that is one line and names the file. Anything
    else (another exception type) fails the test."""
    try:
        return fn(path, *args)
    except DataError as e:
        msg = str(e)
        assert "\n" not in msg and str(path) in msg, msg
        return None


def write_points(path: Path, pts: np.ndarray) -> None:
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, pts)
    elif suffix == ".xyz":
        path.write_text("".join(" ".join(repr(float(v)) for v in row) + "\n" for row in pts))
    else:  # binary PLY, as a sensor or numpy would write it (float32: 1e30 stays, beyond 3.4e38 is inf)
        header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(pts)}\n"
                  "property float x\nproperty float y\nproperty float z\nend_header\n")
        with np.errstate(over="ignore"):
            path.write_bytes(header.encode() + pts.astype("<f4").tobytes())


# ---- point clouds ------------------------------------------------------------------------------------------
@CASES
@given(pts=POINT_ARRAYS, suffix=st.sampled_from([".ply", ".xyz", ".npy"]))
def test_point_clouds_with_nan_inf_huge_and_duplicate_points(tmp_path, capfd, pts, suffix):
    path = tmp_path / f"cloud{suffix}"
    write_points(path, pts)
    stored = pts.astype(np.float32).astype(np.float64) if suffix == ".ply" else pts
    finite = np.isfinite(stored).all(axis=1)
    cloud = expect_data_error_or(formats.load_points, path)
    err = capfd.readouterr().err
    if not finite.any() or np.abs(stored[finite]).max(initial=0) > formats.MAX_COORDINATE:
        assert cloud is None  # nothing usable, or coordinates of 1e30: refused
        return
    assert cloud is not None
    np.testing.assert_array_equal(cloud.points, stored[finite])  # exactly the finite points, in order
    dropped = int((~finite).sum())
    assert (f"dropped {dropped:,} of {len(pts):,} points" in err) == (dropped > 0), err
    assert len(err.strip().splitlines()) <= 1


READERS = {
    "points": (formats.load_points, formats.POINT_SUFFIXES),
    "points_2d": (formats.load_points_2d, (".npy", ".txt", ".xyz", ".ply")),
    "mesh": (load_mesh, formats.MESH_SUFFIXES),
    "idx": (formats.read_idx, (".idx", ".gz")),
    "npz": (lambda p: formats.load_sdf_samples(p), (".npz",)),
    "png": (formats.load_png, (".png",)),
    "scan": (load_scan, (".ply",)),
}


@CASES
@given(kind=st.sampled_from(sorted(READERS)), data=st.data(), content=st.binary(max_size=600))
def test_random_bytes_are_refused_in_one_line(tmp_path, kind, data, content):
    fn, suffixes = READERS[kind]
    path = tmp_path / f"random{data.draw(st.sampled_from(suffixes))}"
    path.write_bytes(content)
    expect_data_error_or(fn, path)  # random bytes may parse (e.g. as an empty .xyz): then no exception


def _valid_files(folder: Path) -> dict[str, tuple[Path, object]]:
    """One valid file per reader: path -> the reader to use on its damaged copies."""
    rng = np.random.default_rng(0)
    out = {}
    pts = rng.normal(size=(60, 3))
    formats.save_points_ply(folder / "cloud.ply", pts, pts / np.linalg.norm(pts, axis=1, keepdims=True),
                            ("camera 1 2 3",))
    out["cloud.ply"] = formats.load_points
    np.save(folder / "cloud.npy", pts)
    out["cloud.npy"] = formats.load_points
    (folder / "cloud.xyz").write_text("".join(f"{a} {b} {c}\n" for a, b, c in pts))
    out["cloud.xyz"] = formats.load_points
    pcd = (f"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\n"
           f"POINTS {len(pts)}\nDATA ")
    (folder / "cloud.pcd").write_bytes(f"{pcd}binary\n".encode() + pts.astype("<f4").tobytes())
    (folder / "cloud-ascii.pcd").write_text(f"{pcd}ascii\n" + "".join(f"{a} {b} {c}\n" for a, b, c in pts))
    np.savez(folder / "cloud.npz", points=pts, normals=pts)
    out.update({"cloud.pcd": formats.load_points, "cloud-ascii.pcd": formats.load_points,
                "cloud.npz": formats.load_points})
    box = trimesh.creation.box()
    for suffix in formats.MESH_SUFFIXES:
        box.export(folder / f"box{suffix}")
        out[f"box{suffix}"] = load_mesh
    images = (rng.random((3, 28, 28)) * 255).astype(np.uint8)
    formats.write_idx(folder / "d-images-idx3-ubyte", images)
    out["d-images-idx3-ubyte"] = formats.read_idx
    formats.write_idx(folder / "d-images-idx3-ubyte.gz", images)
    out["d-images-idx3-ubyte.gz"] = formats.read_idx
    formats.save_sdf_samples(folder / "s.npz", rng.normal(size=(20, 4)), rng.normal(size=(20, 4)))
    out["s.npz"] = formats.load_sdf_samples
    formats.save_png(folder / "digit.png", images[0])
    out["digit.png"] = formats.load_png
    return out


@CASES
@given(data=st.data())
def test_truncated_and_damaged_files_are_refused_in_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("valid")
    valid = _valid_files(folder)
    name = data.draw(st.sampled_from(sorted(valid)))
    raw = (folder / name).read_bytes()
    how = data.draw(st.sampled_from(["truncate", "flip", "header"]))
    if how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:  # overwrite a few bytes, anywhere or within the first 64 (the header)
        end = min(len(raw), 64) if how == "header" else len(raw)
        raw = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, end - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(raw)
    path = folder / f"damaged-{name}"
    path.write_bytes(raw)
    result = expect_data_error_or(valid[name], path)
    if isinstance(result, formats.PointCloud):
        assert np.isfinite(result.points).all() and np.abs(result.points).max() <= formats.MAX_COORDINATE
    if isinstance(result, trimesh.Trimesh):
        assert np.isfinite(result.vertices).all() and len(result.faces) > 0


@CASES
@given(ndim=st.integers(0, 4), sizes=st.lists(st.integers(-2**31, 2**31 - 1), min_size=4, max_size=4),
       code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]), extra=st.integers(-8, 8),
       gz=st.booleans())
def test_idx_headers_with_any_sizes(tmp_path, ndim, sizes, code, extra, gz):
    """Headers announcing negative, huge or mismatching sizes never allocate what they claim."""
    header = bytes([0, 0, code, ndim]) + np.asarray(sizes[:ndim], ">i4").tobytes()
    body = bytes(max(0, min(4096, int(np.prod([max(s, 0) for s in sizes[:ndim]], dtype=np.float64)) + extra)))
    raw = header + body
    path = tmp_path / ("x.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    arr = expect_data_error_or(formats.read_idx, path)
    if arr is not None:
        assert arr.shape == tuple(sizes[:ndim]) and arr.nbytes <= len(body)


def test_gzip_bomb_idx_is_refused_without_inflating_it(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "MAX_IDX_BYTES", 1 << 20)  # a 1 MiB limit stands in for the real 1 GiB one
    bomb = tmp_path / "bomb-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + np.asarray([10_000, 28, 28], ">i4").tobytes()
    bomb.write_bytes(gzip.compress(header + bytes(10_000 * 28 * 28)))  # 7.8 MB of zeros in 8 KB
    with pytest.raises(DataError, match="beyond the limit"):
        formats.read_idx(bomb)


def test_oversized_images_are_refused_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    buf = io.BytesIO()
    Image.new("L", (4000, 3000)).save(buf, format="PNG")
    big.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="4000x3000 pixels, more than the limit"):
        formats.load_png(big)
    huge = tmp_path / "huge-images-idx3-ubyte"
    formats.write_idx(huge, np.zeros((1, 300, 300), np.uint8))
    formats.write_idx(tmp_path / "huge-labels-idx1-ubyte", np.zeros(1, np.uint8))
    from deepsdf_ad.data_prep.digits import load_digit_set

    with pytest.raises(DataError, match="300x300 pixels"):
        load_digit_set("huge", huge, tmp_path / "huge-labels-idx1-ubyte")


@CASES
@given(camera=st.one_of(st.none(), st.lists(HOSTILE_FLOATS, min_size=0, max_size=4), st.text(max_size=5)),
       norm=st.one_of(st.none(), st.fixed_dictionaries({"offset": st.lists(HOSTILE_FLOATS, max_size=4),
                                                         "scale": HOSTILE_FLOATS}),
                      st.dictionaries(st.text(max_size=6), st.integers(), max_size=2), st.integers()))
def test_scan_sidecars_with_hostile_content(tmp_path, camera, norm):
    path = tmp_path / "scan.ply"
    formats.save_points_ply(path, np.random.default_rng(0).normal(size=(30, 3)))
    meta = {k: v for k, v in (("camera", camera), ("normalization", norm)) if v is not None}
    path.with_suffix(".json").write_text(json.dumps(meta))
    try:
        cloud, got = load_scan(path)
    except DataError as e:
        assert "\n" not in str(e) and "scan" in str(e)
        return
    if "camera" in got:
        assert np.isfinite(np.asarray(got["camera"], float)).all()
    if "normalization" in got:
        assert np.isfinite(got["normalization"]["offset"]).all() and got["normalization"]["scale"] > 0


# ---- meshes through prep and scan --------------------------------------------------------------------------
MESH_ARRAYS = st.tuples(
    st.one_of(arrays(np.float64, st.tuples(st.integers(0, 8), st.just(3)), elements=HOSTILE_FLOATS),
              arrays(np.float64, st.tuples(st.integers(3, 8), st.just(3)), elements=st.floats(-1, 1)),
              st.just(np.zeros((4, 3)))),  # all vertices coincide
    arrays(np.int64, st.tuples(st.integers(0, 6), st.just(3)), elements=st.integers(-1, 9)),
)


def write_off(path: Path, v: np.ndarray, f: np.ndarray) -> None:
    lines = ["OFF", f"{len(v)} {len(f)} 0"] + [" ".join(repr(float(x)) for x in row) for row in v]
    lines += ["3 " + " ".join(str(int(i)) for i in row) for row in f]
    path.write_text("\n".join(lines) + "\n")


@FEW
@given(mesh=MESH_ARRAYS, with_box=st.booleans())
def test_prep_and_scan_of_hostile_meshes(tmp_path, mesh, with_box):
    """prep records a hostile mesh as failed with a one-line reason (never raises); scan refuses it."""
    v, f = mesh
    if with_box:  # a good box plus the hostile vertices/faces appended
        box = trimesh.creation.box()
        v, f = np.concatenate([box.vertices, v]), np.concatenate([box.faces, f + len(box.vertices)])
    path = tmp_path / "thing" / "m.off"
    path.parent.mkdir(exist_ok=True)
    write_off(path, v, f)
    cfg = PrepConfig(SamplingConfig(samples=400, surface_points=100))
    rec = prep_one(str(path), "thing", "m", str(tmp_path / "data"), cfg)
    assert rec["status"] in ("ok", "failed")
    if rec["status"] == "failed":
        assert "\n" not in rec["reason"] and rec["reason"].startswith(str(path)), rec["reason"]
        assert "unexpected" not in rec["reason"], rec["reason"]
    mesh = expect_data_error_or(load_mesh, path)
    if mesh is not None:
        try:
            scan = scan_mesh(mesh, CameraConfig(resolution=16), np.random.default_rng(0))
        except DataError as e:
            assert "sees nothing" in str(e)
        else:
            assert np.isfinite(scan.points).all()


# ---- reconstruct -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_sphere_run(tmp_path_factory.mktemp("run"))


@FEW
@given(pts=POINT_ARRAYS, sidecar=st.booleans())
def test_reconstruct_of_hostile_scans(tiny_run, tmp_path, capfd, pts, sidecar):
    from deepsdf_ad.commands.reconstruction import reconstruct_file

    path = tmp_path / "partial.ply"
    write_points(path, pts)
    path.with_suffix(".json").unlink(missing_ok=True)
    if sidecar:
        path.with_suffix(".json").write_text(json.dumps({"camera": [2.0, 0.0, 0.0],
                                                        "normalization": {"offset": [0, 0, 0],
                                                                          "scale": 1.0}}))
    try:
        info = reconstruct_file(tiny_run, path, tmp_path / "out.ply", resolution=8, iterations=2,
                                device="cpu")
    except DataError as e:
        assert "\n" not in str(e), str(e)
    else:
        assert info["points"] >= 1 and (tmp_path / "out.ply").is_file()
    capfd.readouterr()


def test_ten_million_points_load_fast_and_reconstruct_thins_them(tiny_run, tmp_path, capfd):
    from deepsdf_ad.commands.reconstruction import reconstruct_file
    from deepsdf_ad.reconstruct import MAX_OBSERVED_POINTS

    n = 10_000_000
    path = tmp_path / "huge.ply"
    pts = np.random.default_rng(0).normal(size=(n, 3)).astype("<f4")
    pts[::1000] = np.nan  # 10,000 broken points among them
    write_points(path, pts)
    t0 = time.perf_counter()
    try:
        info = reconstruct_file(tiny_run, path, tmp_path / "out.ply", resolution=8, iterations=2,
                                device="cpu")
        assert info["points"] == n - 10_000
    except DataError as e:  # a one-epoch model may have no surface on an 8^3 grid; the point is getting there
        assert "no zero crossing" in str(e)
    seconds = time.perf_counter() - t0
    err = capfd.readouterr().err
    assert "dropped 10,000 of 10,000,000 points" in err and f"using a random {MAX_OBSERVED_POINTS:,}" in err
    assert seconds < 60, seconds
    # past the limit: refused from the header, before reading anything
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {formats.MAX_POINTS + 1}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    path.write_bytes(header.encode())
    with pytest.raises(DataError, match="more than the limit 20,000,000; subsample it first"):
        formats.load_points(path)


# ---- the same through the real CLI: one line, exit 2 -------------------------------------------------------
def test_cli_cases_end_in_one_line(tiny_run, tmp_path):
    garbage = tmp_path / "garbage.off"
    garbage.write_bytes(bytes(range(256)) * 4)
    assert_one_line_error(cli("scan", garbage, "--out", tmp_path / "s.ply"), "garbage.off",
                          "cannot parse mesh")

    far = tmp_path / "far.xyz"
    far.write_text("1e30 0 0\n0 1 0\n0 0 1\n")
    assert_one_line_error(cli("reconstruct", far, "--run", tiny_run, "--out", tmp_path / "r.ply"),
                          "far.xyz", "beyond the limit")

    nan = tmp_path / "nan.xyz"
    nan.write_text("nan 0 0\ninf 1 1\n")
    assert_one_line_error(cli("reconstruct", nan, "--run", tiny_run, "--out", tmp_path / "r.ply"),
                          "nan.xyz", "no finite points")

    src = tmp_path / "meshes" / "c"
    src.mkdir(parents=True)
    write_off(src / "nan.off", np.full((3, 3), np.nan), np.array([[0, 1, 2]]))
    write_off(src / "huge.off", np.array([[0, 0, 0], [1e30, 0, 0], [0, 1e30, 0]]), np.array([[0, 1, 2]]))
    proc = cli("prep", "meshes", tmp_path / "meshes", "--out", tmp_path / "data", "--samples", "500",
               "--quiet")
    assert_one_line_error(proc, "no mesh could be prepared")
    assert "NaN or infinite" in proc.stdout and "too large" in proc.stdout

    idx = tmp_path / "idx"
    idx.mkdir()
    header = bytes([0, 0, 8, 3]) + np.asarray([-1, 28, 28], ">i4").tobytes()
    (idx / "x-images-idx3-ubyte").write_bytes(header)
    formats.write_idx(idx / "x-labels-idx1-ubyte", np.zeros(1, np.uint8))
    assert_one_line_error(cli("prep", "digits", idx, "--out", tmp_path / "d"), "negative size")
