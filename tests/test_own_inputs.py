"""Issue 19: reconstruct on the captures people have. Point clouds as .ply, .pcd (ascii, binary,
binary_compressed), .xyz/.txt, .npy (N, 3)/(N, 6) and .npz read as the same points; a 16-bit depth PNG with
pinhole intrinsics (``reconstruct --depth``) gives the mesh its back-projected point cloud gives; each bad
depth input or flag ends in one line; progress bars only when asked for."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.data_prep.scans import DepthCamera, load_depth_scan, points_from_depth
from tests.helpers import assert_one_line_error, cli, sphere_sdf, train_tiny_sphere_run

# a 64x48 depth camera (focal length in pixels, principal point off the centre) looking at a ball
CAMERA = DepthCamera(fx=60.0, fy=62.0, cx=31.5, cy=22.0, depth_scale=1000.0)
INTRINSICS = "60,62,31.5,22"
BALL_CENTRE, BALL_RADIUS = np.array([0.05, -0.02, 0.8]), 0.25


def render_ball(cam: DepthCamera = CAMERA, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """Raw depths (H, W) uint16 of the ball seen by ``cam`` (0 where a ray misses it): ray (u, v) runs along
    ((u - cx) / fx, (v - cy) / fy, 1), so its parameter at the hit is the depth z."""
    w, h = size
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    d = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], axis=-1)
    a = np.sum(d * d, axis=-1)
    b = -2.0 * d @ BALL_CENTRE
    c = BALL_CENTRE @ BALL_CENTRE - BALL_RADIUS**2
    disc = b * b - 4 * a * c
    z = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0.0)
    return np.round(z * cam.depth_scale).astype(np.uint16)


# ---- point-cloud formats -----------------------------------------------------------------------------------
def _cloud(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Points and unit normals, float32 values held as float64 (every format stores them exactly)."""
    p = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    nrm = (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
    return p.astype(np.float64), nrm.astype(np.float64)


def _pcd_header(n: int, data: str, fields: str, size: str, kind: str, count: str) -> str:
    return (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {fields}\nSIZE {size}\n"
            f"TYPE {kind}\nCOUNT {count}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
            f"POINTS {n}\nDATA {data}\n")


def write_pcd_ascii(path: Path, p: np.ndarray, nrm: np.ndarray) -> None:
    """As PCL writes it, with an rgb field between the points and the normals (skipped on reading)."""
    rows = "".join(f"{x!r} {y!r} {z!r} 4278190335 {a!r} {b!r} {c!r}\n"
                   for (x, y, z), (a, b, c) in zip(p.tolist(), nrm.tolist(), strict=True))
    path.write_text(_pcd_header(len(p), "ascii", "x y z rgb normal_x normal_y normal_z", "4 4 4 4 4 4 4",
                                "F F F U F F F", "1 1 1 1 1 1 1") + rows)


def write_pcd_binary(path: Path, p: np.ndarray, nrm: np.ndarray) -> None:
    """Little-endian records with PCL's padding field '_' (COUNT 4) and a float64 curvature."""
    rec = np.zeros(len(p), [("xyz", "<f4", (3,)), ("pad", "u1", (4,)), ("n", "<f4", (3,)), ("curv", "<f8")])
    rec["xyz"], rec["n"] = p, nrm
    header = _pcd_header(len(p), "binary", "x y z _ normal_x normal_y normal_z curvature", "4 4 4 1 4 4 4 8",
                         "F F F U F F F F", "1 1 1 4 1 1 1 1")
    path.write_bytes(header.encode() + rec.tobytes())


def test_every_point_format_reads_the_points_and_normals_of_the_ply(tmp_path):
    p, nrm = _cloud()
    formats.save_points_ply(tmp_path / "c.ply", p, nrm)
    write_pcd_ascii(tmp_path / "ascii.pcd", p, nrm)
    write_pcd_binary(tmp_path / "binary.pcd", p, nrm)
    np.savez(tmp_path / "named.npz", points=p, normals=nrm)
    np.savez(tmp_path / "single.npz", np.concatenate([p, nrm], axis=1))
    np.save(tmp_path / "six.npy", np.concatenate([p, nrm], axis=1))
    (tmp_path / "c.xyz").write_text("".join(" ".join(repr(v) for v in row) + "\n"
                                            for row in np.concatenate([p, nrm], axis=1).tolist()))
    ply = formats.load_points(tmp_path / "c.ply")
    assert ply.normals is not None
    for name in ("ascii.pcd", "binary.pcd", "named.npz", "single.npz", "six.npy", "c.xyz"):
        cloud = formats.load_points(tmp_path / name)
        np.testing.assert_array_equal(cloud.points, ply.points, err_msg=name)
        np.testing.assert_array_equal(cloud.normals, ply.normals, err_msg=name)
    np.savez(tmp_path / "bare.npz", points=p)  # normals are optional
    bare = formats.load_points(tmp_path / "bare.npz")
    np.testing.assert_array_equal(bare.points, ply.points)
    assert bare.normals is None


@pytest.mark.parametrize("kind", ["ascii", "binary", "binary_compressed"])
def test_pcd_as_open3d_writes_it(tmp_path, kind):
    o3d = pytest.importorskip("open3d")
    p, nrm = _cloud()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    cloud.normals = o3d.utility.Vector3dVector(nrm)
    path = tmp_path / f"{kind}.pcd"
    o3d.io.write_point_cloud(str(path), cloud, write_ascii=kind == "ascii",
                             compressed=kind == "binary_compressed")
    assert f"DATA {kind}" in path.read_bytes()[:1000].decode("ascii", "replace")
    got = formats.load_points(path)
    np.testing.assert_allclose(got.points, p, atol=1e-6)
    np.testing.assert_allclose(got.normals, nrm, atol=1e-6)


def test_compressed_pcd_without_open3d_says_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "c.pcd"
    path.write_bytes(_pcd_header(3, "binary_compressed", "x y z", "4 4 4", "F F F", "1 1 1").encode()
                     + b"\0" * 8)
    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d fails
    with pytest.raises(DataError, match="binary_compressed PCD needs open3d"):
        formats.load_points(path)


BAD_PCD = {
    "no fields": ("VERSION 0.7\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2 3\n",
                  "no FIELDS line"),
    "sizes": ("FIELDS x y z\nSIZE 4 4\nTYPE F F F\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2 3\n",
              "as many entries"),
    "no z": ("FIELDS x y\nSIZE 4 4\nTYPE F F\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2\n",
             "needs the fields x y z"),
    "type": ("FIELDS x y z\nSIZE 3 4 4\nTYPE F F F\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2 3\n",
             "TYPE F SIZE 3"),
    "count": ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH two\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1 2 3\n",
              "must be integers"),
    "points": ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 2\nHEIGHT 1\nPOINTS 3\nDATA ascii\n1 2 3\n",
               "not WIDTH x HEIGHT"),
    "data": ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA lzma\n",
             "DATA must be"),
    "no data line": ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nHEIGHT 1\n",
                     "ends before its DATA line"),
    "rows": ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA ascii\n1 2 3\n",
             "announces 2 points"),
    "truncated": ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA binary\n"
                  + "\0" * 12,
                  "truncated"),
    "huge": ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 30000000\nHEIGHT 1\nPOINTS 30000000\nDATA binary\n",
             "more than the limit"),
    "binary junk": ("\x00\xff\xfe garbage", "not ASCII"),
}


@pytest.mark.parametrize("case", sorted(BAD_PCD))
def test_malformed_pcd_is_one_line_naming_the_file(tmp_path, case):
    text, needle = BAD_PCD[case]
    path = tmp_path / "bad.pcd"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=needle) as e:
        formats.load_points(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_npz_that_is_not_a_point_cloud_is_refused(tmp_path):
    p, nrm = _cloud()
    cases = {
        "two.npz": (dict(a=p, b=nrm), "expected an array 'points'"),
        "normals.npz": (dict(points=p, normals=nrm[:5]), "they must match"),
        "strings.npz": (dict(points=np.array(["a", "b"])), "expected numbers"),
        "wide.npz": (dict(points=np.zeros((4, 5))), r"expected \(N, 3\) points"),
    }
    for name, (arrays, needle) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(DataError, match=needle):
            formats.load_points(tmp_path / name)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npz"
    np.savez(evil, points=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(DataError, match="pickled objects, which are refused"):
        formats.load_points(evil)
    assert not marker.exists()


class _Payload:
    """Unpickling it would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


# ---- depth images ------------------------------------------------------------------------------------------
def test_back_projection_is_the_pinhole_convention():
    depth = np.zeros((48, 64), np.uint16)
    depth[22, 40] = 1500  # a pixel right of the principal point (row cy): x > 0, y = 0, z = 1.5 m
    depth[30, 31] = 2000  # below it: y > 0 (y down)
    pts = points_from_depth(depth, CAMERA)
    np.testing.assert_allclose(pts, [[(40 - 31.5) * 1.5 / 60, 0.0, 1.5],
                                     [(31 - 31.5) * 2.0 / 60, 8 * 2.0 / 62, 2.0]])


def test_back_projection_matches_open3d():
    o3d = pytest.importorskip("open3d")
    depth = render_ball()
    depth[::7, ::5] = 0  # holes
    intrinsic = o3d.camera.PinholeCameraIntrinsic(64, 48, CAMERA.fx, CAMERA.fy, CAMERA.cx, CAMERA.cy)
    ref = o3d.geometry.PointCloud.create_from_depth_image(o3d.geometry.Image(depth), intrinsic,
                                                          depth_scale=CAMERA.depth_scale, depth_trunc=1e9)
    np.testing.assert_allclose(points_from_depth(depth, CAMERA), np.asarray(ref.points), rtol=1e-6, atol=1e-7)


def test_depth_png_keeps_its_16_bits_and_refuses_other_images(tmp_path):
    depth = render_ball()
    depth[0, 0] = 65535
    formats.save_depth_png(tmp_path / "d.png", depth)
    np.testing.assert_array_equal(formats.load_depth_png(tmp_path / "d.png"), depth)
    cloud, meta = load_depth_scan(tmp_path / "d.png", CAMERA)
    assert meta["camera"] == [0.0, 0.0, 0.0] and len(cloud.points) == int((depth > 0).sum())
    Image.fromarray((depth // 256).astype(np.uint8)).save(tmp_path / "gray8.png")
    Image.fromarray(np.stack([(depth // 256).astype(np.uint8)] * 3, axis=-1)).save(tmp_path / "rgb.png")
    for name, needle in (("gray8.png", "an 8-bit image"), ("rgb.png", "a colour image")):
        with pytest.raises(DataError, match=needle):
            formats.load_depth_png(tmp_path / name)
    formats.save_depth_png(tmp_path / "zeros.png", np.zeros((8, 8), np.uint16))
    with pytest.raises(DataError, match="no valid pixel"):
        load_depth_scan(tmp_path / "zeros.png", CAMERA)


# ---- reconstruct --depth, end to end -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """50 one-batch epochs of a 4x64 decoder (about a second): enough for a surface on the ball (the 4x32
    decoder of the default tiny run starts with its output beyond the clamp everywhere and learns nothing)."""
    return train_tiny_sphere_run(tmp_path_factory.mktemp("run"), epochs=50,
                                 extra=("model.decoder.hidden=[64,64,64,64]", "train.checkpoint_every=50"))


def test_reconstruct_from_depth_is_the_reconstruction_of_its_point_cloud(tiny_run, tmp_path):
    depth_png = tmp_path / "depth.png"
    formats.save_depth_png(depth_png, render_ball())
    cloud = tmp_path / "cloud.npy"  # the same points (float64: exactly those --depth computes)
    np.save(cloud, points_from_depth(formats.load_depth_png(depth_png), CAMERA))
    cloud.with_suffix(".json").write_text(json.dumps({"camera": [0, 0, 0]}))
    a, b = tmp_path / "from_depth.ply", tmp_path / "from_cloud.ply"
    cli("reconstruct", "--depth", depth_png, "--intrinsics", INTRINSICS, "--depth-scale", "1000", "--run",
        tiny_run, "--out", a, "--seed", "3", check=True)
    cli("reconstruct", cloud, "--run", tiny_run, "--out", b, "--seed", "3", "--quiet", check=True)
    ma, mb = (trimesh.load(p, process=False) for p in (a, b))
    assert len(ma.vertices) > 0
    np.testing.assert_array_equal(ma.vertices, mb.vertices)
    np.testing.assert_array_equal(ma.faces, mb.faces)
    # in the camera's frame: around the ball, in front of the camera
    assert 0.3 < float(np.median(ma.vertices[:, 2])) < 1.3


def render_mesh_depth(mesh: trimesh.Trimesh, cam: DepthCamera = CAMERA, size: tuple[int, int] = (64, 48)
                      ) -> np.ndarray:
    """A 16-bit depth image (millimetres) of ``mesh`` (metres, camera frame) by one ray per pixel (Open3D's
    ray casting, as ``deepsdf-ad scan`` casts them)."""
    o3d = pytest.importorskip("open3d")
    w, h = size
    v, u = np.mgrid[0:h, 0:w]
    dirs = np.stack([(u.ravel() - cam.cx) / cam.fx, (v.ravel() - cam.cy) / cam.fy, np.ones(w * h)], axis=1)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    rays = np.concatenate([np.zeros_like(dirs), dirs], axis=1).astype(np.float32)
    t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()  # along dirs, whose z is 1: t is the depth
    depth = np.where(np.isfinite(t), t, 0.0)
    return np.round(depth * cam.depth_scale).astype(np.uint16).reshape(h, w)


def test_reconstruct_from_the_depth_image_of_a_shared_mesh_is_that_of_its_point_cloud(tiny_run, tmp_path):
    from deepsdf_ad.data_prep.meshes import load_mesh, normalized_mesh
    from tests.helpers import SHARED_DATA

    chairs = sorted((SHARED_DATA / "meshes" / "chair").glob("*.off"))
    if not chairs:
        pytest.skip(f"{SHARED_DATA}/meshes/chair: the shared meshes are not here")
    mesh = normalized_mesh(load_mesh(chairs[0]))[0]  # unit sphere -> 0.4 m across, 1 m in front
    mesh = trimesh.Trimesh(mesh.vertices * 0.4 + [0.0, 0.0, 1.0], mesh.faces, process=False)
    depth = render_mesh_depth(mesh)
    assert (depth > 0).sum() > 200, "the chair covers too few pixels"
    depth_png = tmp_path / "depth.png"
    formats.save_depth_png(depth_png, depth)
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, points_from_depth(formats.load_depth_png(depth_png), CAMERA))
    cloud.with_suffix(".json").write_text(json.dumps({"camera": [0, 0, 0]}))
    a, b = tmp_path / "from_depth.ply", tmp_path / "from_cloud.ply"
    from deepsdf_ad.commands.reconstruction import reconstruct_scan  # what the command runs, in-process

    reconstruct_scan(tiny_run, depth_png, a, device="cpu", seed=3, pose_search=False, depth_camera=CAMERA)
    reconstruct_scan(tiny_run, cloud, b, device="cpu", seed=3, pose_search=False)
    ma, mb = (trimesh.load(p, process=False) for p in (a, b))
    assert len(ma.vertices) > 0
    np.testing.assert_array_equal(ma.vertices, mb.vertices)
    np.testing.assert_array_equal(ma.faces, mb.faces)


def test_bad_depth_inputs_and_flags_are_one_line(tiny_run, tmp_path):
    good = tmp_path / "depth.png"
    formats.save_depth_png(good, render_ball())
    zeros = tmp_path / "zeros.png"
    formats.save_depth_png(zeros, np.zeros((48, 64), np.uint16))
    gray8 = tmp_path / "gray8.png"
    Image.fromarray(np.full((48, 64), 90, np.uint8)).save(gray8)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(rgb)
    cloud = tmp_path / "cloud.xyz"
    cloud.write_text("0 0 1\n0 1 1\n1 0 1\n")
    out = ["--run", tiny_run, "--out", tmp_path / "out.ply"]
    depth = ["--depth", good, "--intrinsics", INTRINSICS]
    cases = [
        (["--depth", zeros, "--intrinsics", INTRINSICS], ("zeros.png", "no valid pixel")),
        (["--depth", gray8, "--intrinsics", INTRINSICS], ("gray8.png", "8-bit", "not a 16-bit depth image")),
        (["--depth", rgb, "--intrinsics", INTRINSICS], ("rgb.png", "colour", "not a 16-bit depth image")),
        (["--depth", good, "--intrinsics", "60,62,31.5"], ("--intrinsics", "not 4 finite numbers")),
        (["--depth", good, "--intrinsics", "60,nan,31.5,22"], ("--intrinsics", "not 4 finite numbers")),
        (["--depth", good, "--intrinsics", "0,62,31.5,22"], ("--intrinsics", "must be positive")),
        ([*depth, "--depth-scale", "0"], ("--depth-scale", "must be positive")),
        ([cloud, "--intrinsics", INTRINSICS], ("go with --depth",)),
        ([cloud, "--depth-scale", "1000"], ("go with --depth",)),
        (["--depth", good], ("depth.png", "needs the camera's --intrinsics")),
        ([cloud, *depth], ("got both",)),
        ([], ("got neither",)),
    ]
    for args, needles in cases:
        assert_one_line_error(cli("reconstruct", *args, *out), *needles)
    assert not (tmp_path / "out.ply").exists()


# ---- progress ----------------------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_when_asked_and_on_a_terminal(tiny_run, tmp_path, monkeypatch):
    from deepsdf_ad.commands.mesh import mesh_training_shape
    from deepsdf_ad.commands.reconstruction import reconstruct_file
    from deepsdf_ad.data_prep import log

    formats.save_depth_png(tmp_path / "d.png", render_ball())
    monkeypatch.setattr(log, "BAR_DELAY", 0.0)
    shown = {}
    for progress in (False, True):
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        reconstruct_file(tiny_run, tmp_path / "d.png", tmp_path / f"{progress}.ply", device="cpu",
                         depth_camera=CAMERA, progress=progress, method="dense")
        shown[progress] = terminal.getvalue()
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        mesh_training_shape(tiny_run, "b0", tmp_path / f"b0-{progress}.ply", device="cpu", progress=progress)
        shown[progress] += terminal.getvalue()
    monkeypatch.undo()
    assert "optimise code" not in shown[False] and "mesh (" not in shown[False]
    assert "optimise code" in shown[True] and "mesh (dense, 16^3)" in shown[True]
    assert "mesh (adaptive, 16^3)" in shown[True]
    for name in ("", "b0-"):
        assert (tmp_path / f"{name}False.ply").read_bytes() == (tmp_path / f"{name}True.ply").read_bytes()
    # the commands' flag; a pipe is no terminal: no bar there either way
    proc = cli("mesh", "--run", tiny_run, "--shape", "b0", "--out", tmp_path / "quiet.ply", "--quiet",
               check=True)
    assert (proc.stderr == ""
            and (tmp_path / "quiet.ply").read_bytes() == (tmp_path / "b0-True.ply").read_bytes())


def test_dense_grid_in_slabs_is_the_grid_in_one_go():
    from deepsdf_ad.meshing import evaluate_grid

    reports = []
    sliced = evaluate_grid(sphere_sdf, 20, report=lambda done, total: reports.append((done, total)))
    np.testing.assert_array_equal(sliced, evaluate_grid(sphere_sdf, 20))
    assert reports[-1] == (20, 20) and len(reports) == 20
