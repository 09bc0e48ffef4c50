"""Data-prep benchmark: our ``prep meshes`` against the public ``mesh-to-sdf`` package, in one run.

Meshes: the watertight shared ModelNet10 meshes (watertight after merging coincident vertices) plus an
analytic icosphere (5,120 faces) and a box. Per mesh it prints the seconds each tool takes for ``--samples``
samples (ours: one whole ``prep meshes`` job, loading the file and writing the sample, normalisation and
surface files; median of ``--repeats`` runs; mesh_to_sdf: ``sample_sdf_near_surface`` with its defaults, 100
scans of 400x400 rendered by pyrender on OSMesa, one run), the ratio, and each tool's sign accuracy against
ground truth on its own samples (all of them, and the Gaussian near-surface share), plus mesh_to_sdf's
accuracy on our query points (same points for both tools).

Ground truth on a closed mesh: the generalized winding number of the closed mesh (coincident vertices merged,
faces wound consistently), inside where |w| > 1/2 (this also counts overlapping closed parts as inside, where
ray parity fails). It is evaluated exactly (libigl's ``winding_number``) wherever ray parity (open3d, majority
of 3 rays) and the fast winding number disagree; where two independent tests agree their answer is taken.
Samples closer than 1e-5 to the surface (normalised frame) have no meaningful sign and are left out (the share
is printed).

Opened meshes: each closed mesh with a patch of faces removed (the faces nearest a random surface point, until
``--hole`` of the area is gone); our signs against the truth of the closed original, all samples and
near-surface samples, and whether prep accepted the mesh (its sign-quality figure ``ambiguous``).

    PYOPENGL_PLATFORM=osmesa python benchmarks/bench_prep.py [--samples 250000] [--m2s-limit N]

mesh_to_sdf is an optional extra (``pip install -e '.[bench]' && pip install --no-deps mesh-to-sdf``: its
metadata asks for the unmaintained pyrender, which would replace pyrender-maintained); without it, or when it
cannot render here, the script says why and prints our numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from deepsdf_ad.data_prep.meshes import (
    SamplingConfig,
    SignedDistance,
    load_mesh,
    near_surface_count,
    normalization,
    normalized_mesh,
    sample_query_points,
)
from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_one, shape_rng

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")  # before pyrender/OpenGL are imported
ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared" / "data" / "meshes"
ON_SURFACE = 1e-5
"""Samples closer than this to the surface (normalised frame) are left out of sign accuracies."""


# ---- ground truth ------------------------------------------------------------------------------
class Truth:
    """Exact inside test of a closed mesh (see the module docstring), in the frame of its vertices."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        import open3d as o3d

        m = trimesh.Trimesh(vertices, faces, process=True)  # merges coincident vertices
        trimesh.repair.fix_winding(m)
        if not m.is_watertight:
            raise ValueError("ground truth needs a closed mesh")
        self.v = np.ascontiguousarray(m.vertices, np.float64)
        self.f = np.ascontiguousarray(m.faces, np.int64)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(self.v.astype(np.float32)),
                                 o3d.core.Tensor(self.f.astype(np.uint32)))
        self.exact_evaluations = 0

    def inside(self, points: np.ndarray) -> np.ndarray:
        import igl
        import open3d as o3d

        p = np.ascontiguousarray(points, np.float64)
        parity = self.scene.compute_occupancy(o3d.core.Tensor(p.astype(np.float32)), nsamples=3).numpy() > 0.5
        fast = np.abs(igl.fast_winding_number(self.v, self.f, p)) > 0.5
        out = parity.copy()
        doubt = np.flatnonzero(parity != fast)
        if len(doubt):
            out[doubt] = np.abs(igl.winding_number(self.v, self.f, p[doubt])) > 0.5
            self.exact_evaluations += len(doubt)
        return out

    def distance(self, points: np.ndarray) -> np.ndarray:
        import open3d as o3d

        return self.scene.compute_distance(o3d.core.Tensor(np.ascontiguousarray(points, np.float32))).numpy()


def accuracy(inside_pred: np.ndarray, truth: Truth, points: np.ndarray,
             mask: np.ndarray | None = None) -> dict:
    """Share of samples with the right sign, over samples not on the surface (and in ``mask``)."""
    keep = truth.distance(points) > ON_SURFACE
    if mask is not None:
        keep &= mask
    right = inside_pred[keep] == truth.inside(points[keep])
    return {"acc": float(right.mean()) if keep.any() else float("nan"), "n": int(keep.sum()),
            "left_out": float(1.0 - keep.sum() / max(1, len(points) if mask is None else int(mask.sum())))}


# ---- meshes ------------------------------------------------------------------------------------
def watertight_shared(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.rglob("*.off")):
        try:
            m = trimesh.load(p, force="mesh", process=False)
        except Exception:  # unreadable files are the prep's business, not the benchmark's
            continue
        m.merge_vertices()
        if len(m.faces) and m.is_watertight:
            out.append(p)
    return out


def analytic(tmp: Path) -> list[Path]:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    box = trimesh.creation.box(extents=(0.8, 0.6, 0.4))
    paths = [tmp / "analytic" / "icosphere.ply", tmp / "analytic" / "box.ply"]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    sphere.export(paths[0])
    box.export(paths[1])
    return paths


def open_patch(mesh: trimesh.Trimesh, share: float, rng: np.random.Generator) -> trimesh.Trimesh:
    """Remove the faces nearest a random surface point until ``share`` of the area is gone (at least one)."""
    m = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    areas = m.area_faces
    seed = m.triangles_center[rng.choice(len(areas), p=areas / areas.sum())]
    order = np.argsort(np.linalg.norm(m.triangles_center - seed, axis=1))
    n = int(np.searchsorted(np.cumsum(areas[order]), share * areas.sum())) + 1
    keep = np.ones(len(areas), bool)
    keep[order[:n]] = False
    return trimesh.Trimesh(m.vertices, m.faces[keep], process=False)


def parity_inside(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene.compute_occupancy(o3d.core.Tensor(np.asarray(points, np.float32)), nsamples=3).numpy() > 0.5


# ---- the tools ---------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    faces: int
    ours_s: float = float("nan")
    ours: dict = field(default_factory=dict)
    ours_near: dict = field(default_factory=dict)
    m2s_s: float = float("nan")
    m2s: dict = field(default_factory=dict)
    m2s_near: dict = field(default_factory=dict)
    m2s_ours_pts: dict = field(default_factory=dict)
    m2s_ours_near: dict = field(default_factory=dict)
    open_removed: float = float("nan")
    open_all: dict = field(default_factory=dict)
    open_near: dict = field(default_factory=dict)
    open_parity_near: dict = field(default_factory=dict)
    open_raw_near: dict = field(default_factory=dict)
    open_status: str = ""
    open_ambiguous: float = float("nan")
    exact_evaluations: int = 0
    note: str = ""


def our_samples(path: Path, cfg: PrepConfig, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The query points, signed distances and near-surface mask prep writes for ``path`` (same seeded
    draw)."""
    nmesh, _, _ = normalized_mesh(load_mesh(path))
    q = sample_query_points(nmesh, cfg.sampling, shape_rng(cfg.seed, key))
    sdf, _ = SignedDistance(nmesh).signed(q)
    return q, sdf, np.arange(len(q)) < near_surface_count(cfg.sampling)


def time_ours(path: Path, cfg: PrepConfig, out: Path, repeats: int) -> tuple[float, dict]:
    times, rec = [], {}
    for _ in range(repeats):
        rec = prep_one(str(path), "bench", path.stem, str(out), cfg)
        times.append(rec["seconds"])
    return statistics.median(times), rec


def m2s_check() -> str | None:
    """None if mesh_to_sdf can run here, else why not (one line)."""
    try:
        import mesh_to_sdf  # noqa: F401
    except Exception as e:
        return (f"mesh_to_sdf is not installed ({type(e).__name__}: {e}); pip install -e '.[bench]' "
                "&& pip install --no-deps mesh-to-sdf")
    try:
        from mesh_to_sdf.surface_point_cloud import create_from_scans

        create_from_scans(trimesh.creation.box(), bounding_radius=1, scan_count=2, scan_resolution=32)
    except Exception as e:
        return ("mesh_to_sdf cannot render here with "
                f"PYOPENGL_PLATFORM={os.environ.get('PYOPENGL_PLATFORM')} ({type(e).__name__}: "
                f"{str(e)[:200]})")
    return None


def run_m2s(mesh: trimesh.Trimesh, samples: int,
            seed: int) -> tuple[float, np.ndarray, np.ndarray, object, tuple]:
    """mesh_to_sdf's ``sample_sdf_near_surface`` with its defaults, timed; returns the seconds, its points and
    sdf in its unit-sphere frame, its surface point cloud (to sign other points) and its frame (centre, r)."""
    from mesh_to_sdf import get_surface_point_cloud
    from mesh_to_sdf.utils import scale_to_unit_sphere

    np.random.seed(seed)  # mesh_to_sdf draws from numpy's global generator
    t0 = time.perf_counter()
    unit = scale_to_unit_sphere(mesh)  # exactly what sample_sdf_near_surface does, step by step
    cloud = get_surface_point_cloud(unit, "scan", 1, 100, 400, 10_000_000, calculate_normals=True)
    q, sdf = cloud.sample_sdf_near_surface(samples, True, "normal", 11, 0, False)
    seconds = time.perf_counter() - t0
    centre = mesh.bounding_box.centroid
    radius = float(np.max(np.linalg.norm(mesh.vertices - centre, axis=1)))
    return seconds, q.astype(np.float64), sdf, cloud, (centre, radius)


# ---- one mesh ----------------------------------------------------------------------------------
def bench_mesh(path: Path, name: str, args, tmp: Path, use_m2s: bool) -> Result:
    cfg = PrepConfig(SamplingConfig(samples=args.samples), seed=args.seed)
    mesh = load_mesh(path)
    res = Result(name, int(len(mesh.faces)))
    offset, scale = normalization(mesh)
    truth = Truth((np.asarray(mesh.vertices) + offset) * scale, mesh.faces)  # our normalised frame

    res.ours_s, rec = time_ours(path, cfg, tmp / "ours", args.repeats)
    if rec.get("status") != "ok":
        res.note = f"our prep failed: {rec.get('reason')}"
    q, sdf, near = our_samples(path, cfg, f"bench/{path.stem}")
    if rec.get("status") == "ok" and rec["neg"] != int(np.sum(sdf <= 0)):
        res.note = "replayed samples differ from the prep's"
    res.ours = accuracy(sdf < 0, truth, q)
    res.ours_near = accuracy(sdf < 0, truth, q, near)

    if use_m2s:
        seconds, mq, msdf, cloud, (centre, radius) = run_m2s(mesh, args.samples, args.seed)
        res.m2s_s = seconds
        n_near = 2 * (int(args.samples * 47 / 50) // 2)
        m_in_ours = ((mq * radius + centre) + offset) * scale
        m_near = np.arange(len(mq)) < n_near
        res.m2s = accuracy(msdf < 0, truth, m_in_ours)
        res.m2s_near = accuracy(msdf < 0, truth, m_in_ours, m_near)
        q_in_m2s = (q / scale - offset - centre) / radius
        msdf_q = cloud.get_sdf_in_batches(q_in_m2s.astype(np.float32), use_depth_buffer=False,
                                          sample_count=11)
        res.m2s_ours_pts = accuracy(msdf_q < 0, truth, q)
        res.m2s_ours_near = accuracy(msdf_q < 0, truth, q, near)

    # the same mesh opened on purpose; truth from the closed original, in the opened mesh's frame
    opened = open_patch(mesh, args.hole, np.random.default_rng([args.seed, len(mesh.faces)]))
    res.open_removed = 1.0 - float(opened.area
                                   / trimesh.Trimesh(mesh.vertices, mesh.faces, process=True).area)
    opath = tmp / "opened" / f"{path.stem}_open.ply"
    opath.parent.mkdir(parents=True, exist_ok=True)
    opened.export(opath)
    orec = prep_one(str(opath), "opened", opath.stem, str(tmp / "ours_open"), cfg)
    res.open_status = orec["status"] + ("" if orec["status"] == "ok" else f" ({orec['reason'][-80:]})")
    res.open_ambiguous = orec.get("sign_quality", {}).get("ambiguous", float("nan"))
    o_offset, o_scale = normalization(opened)
    otruth = Truth((np.asarray(mesh.vertices) + o_offset) * o_scale, mesh.faces)
    oq, osdf, onear = our_samples(opath, cfg, f"opened/{opath.stem}")
    res.open_all = accuracy(osdf < 0, otruth, oq)
    res.open_near = accuracy(osdf < 0, otruth, oq, onear)
    # the baselines on the same samples: ray parity (open3d, majority of 3 rays) and the winding number of
    # the raw faces without our repairs
    onmesh, _, _ = normalized_mesh(load_mesh(opath))
    res.open_parity_near = accuracy(parity_inside(onmesh, oq), otruth, oq, onear)
    res.open_raw_near = accuracy(SignedDistance(onmesh, orient=False)(oq) < 0, otruth, oq, onear)
    res.exact_evaluations = truth.exact_evaluations + otruth.exact_evaluations
    return res


# ---- report ------------------------------------------------------------------------------------
def pct(d: dict) -> str:
    return f"{100 * d['acc']:.2f}" if d and np.isfinite(d.get("acc", np.nan)) else "-"


def print_tables(results: list[Result], args, m2s_reason: str | None) -> None:
    print(f"\nclosed meshes, {args.samples:,} samples; seconds per mesh (ours: median of {args.repeats}); "
          f"sign accuracy in % (all samples / near-surface samples)")
    head = (f"{'mesh':<22}{'faces':>7}{'ours s':>9}{'m2s s':>9}{'ratio':>8}  {'ours all/near':>15}  "
            f"{'m2s all/near':>15}  {'m2s on our pts':>15}")
    print(head)
    print("-" * len(head))
    for r in results:
        ratio = r.m2s_s / r.ours_s if np.isfinite(r.m2s_s) else float("nan")
        m2s_s = f"{r.m2s_s:9.1f}" if np.isfinite(r.m2s_s) else f"{'-':>9}"
        ratio_s = f"{ratio:7.1f}x" if np.isfinite(ratio) else f"{'-':>8}"
        print(f"{r.name:<22}{r.faces:>7}{r.ours_s:9.2f}{m2s_s}{ratio_s}  "
              f"{pct(r.ours) + ' / ' + pct(r.ours_near):>15}  {pct(r.m2s) + ' / ' + pct(r.m2s_near):>15}  "
              f"{pct(r.m2s_ours_pts) + ' / ' + pct(r.m2s_ours_near):>15}"
              + (f"  [{r.note}]" if r.note else ""))
    both = [r for r in results if np.isfinite(r.m2s_s)]
    if both:
        print(f"median ratio (mesh_to_sdf s / ours s) over {len(both)} meshes: "
              f"{statistics.median(r.m2s_s / r.ours_s for r in both):.1f}x")
    if m2s_reason:
        print(f"mesh_to_sdf not run: {m2s_reason}")
    print(f"\nopened meshes (closed mesh minus a patch of about {100 * args.hole:.0f}% of its area; truth "
          "from the closed original): our sign accuracy in %")
    print("(baselines on the same near-surface samples: ray parity = open3d occupancy, majority of 3 rays; "
          "raw wn = winding number of the faces as stored, without our repairs)")
    head = (f"{'mesh':<22}{'removed %':>10}{'all':>9}{'near':>9}  {'parity near':>11}  {'raw wn near':>11}  "
            f"{'ambiguous':>9}  prep")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.name:<22}{100 * r.open_removed:10.1f}{pct(r.open_all):>9}{pct(r.open_near):>9}  "
              f"{pct(r.open_parity_near):>11}  {pct(r.open_raw_near):>11}  {r.open_ambiguous:9.4f}  "
              f"{r.open_status}")
    lo_closed = min(r.ours_near["acc"] for r in results)
    lo_open = min(r.open_near["acc"] for r in results)
    print(f"\nworst near-surface accuracy, ours: closed {100 * lo_closed:.2f}%, opened {100 * lo_open:.2f}% "
          f"(target 99.5%); samples within {ON_SURFACE:g} of the surface left out: at most "
          f"{100 * max(r.ours['left_out'] for r in results):.2f}% (ours), "
          f"{100 * max((r.m2s['left_out'] for r in both), default=0):.2f}% (mesh_to_sdf)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meshes", type=Path, default=SHARED, help="folder searched for watertight .off meshes")
    ap.add_argument("--samples", type=int, default=250_000)
    ap.add_argument("--repeats", type=int, default=3, help="runs of our prep per mesh (median)")
    ap.add_argument("--m2s-limit", type=int, default=None,
                    help="run mesh_to_sdf on only the first N meshes (analytic ones first); default all")
    ap.add_argument("--no-m2s", action="store_true", help="skip mesh_to_sdf")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="benchmark only meshes whose name contains one of these")
    ap.add_argument("--hole", type=float, default=0.03, help="share of the area removed to open a mesh")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    m2s_reason = "skipped (--no-m2s)" if args.no_m2s else m2s_check()
    with tempfile.TemporaryDirectory(prefix="bench_prep_") as tmpdir:
        tmp = Path(tmpdir)
        meshes = [(p.stem, p) for p in analytic(tmp)]
        if args.meshes.is_dir():
            meshes += [(f"{p.parent.name}/{p.stem}", p) for p in watertight_shared(args.meshes)]
        else:
            print(f"note: {args.meshes} not found; analytic meshes only")
        if args.only:
            meshes = [(n, p) for n, p in meshes if any(o in n for o in args.only)]
        print(f"{len(meshes)} closed meshes: {', '.join(n for n, _ in meshes)}")
        results = []
        for i, (name, path) in enumerate(meshes):
            use_m2s = m2s_reason is None and (args.m2s_limit is None or i < args.m2s_limit)
            try:
                r = bench_mesh(path, name, args, tmp, use_m2s)
            except Exception as e:  # report and go on: one odd mesh must not hide the others' numbers
                print(f"{name}: benchmark failed: {type(e).__name__}: {e}")
                traceback.print_exc()
                continue
            results.append(r)
            print(f"  {name}: ours {r.ours_s:.2f} s ({pct(r.ours)} / {pct(r.ours_near)}), "
                  f"mesh_to_sdf {r.m2s_s:.1f} s ({pct(r.m2s)} / {pct(r.m2s_near)}), opened {pct(r.open_all)} "
                  f"/ {pct(r.open_near)} [{time.perf_counter() - t_start:.0f} s]", flush=True)
    if not results:
        print("no mesh could be benchmarked")
        return 1
    if m2s_reason is None and args.m2s_limit is not None and args.m2s_limit < len(results):
        m2s_reason = f"run on the first {args.m2s_limit} meshes only (--m2s-limit), to keep the run short"
    print_tables(results, args, m2s_reason)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
