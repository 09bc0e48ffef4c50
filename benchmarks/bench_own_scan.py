"""Scans in any frame: what the pose search costs against a known frame, and what it saves against the
bounding-box estimate.

Each held-out shape's first scan (DATA/scans, in the normalised frame as ``bench_quality``'s ``scan_in_frame``
reads it) becomes a capture: a floor patch under the object (as dense as the scan, twice its footprint, hidden
where the object stands), 0.5% depth noise along the camera's rays (of the unit radius), 2% stray points in
the box around it all, then a random similarity transform (scale 10^-3..10^3, any turn about the up axis, the
training frame's up axis sent to one of the six input axes in turn, a shift). Three reconstructions with the
same run:

- canonical: the scan itself, normalisation known (its sidecar), as ``bench_quality``'s completion;
- posed: the capture, with no frame known: cleaned and pose-searched (``deepsdf-ad reconstruct``'s default);
  its sidecar gives the camera position in the capture's frame (a depth sensor knows it; ``--no-camera``:
  bare points);
- old: the capture with ``--no-pose-search``: the bounding-box estimate in the capture's own orientation;
- with ``--oracle``, oracle: the capture cleaned as ``reconstruct`` cleans it and put in its true frame (the
  pose known): what a perfect pose search would give, so that the posed / canonical ratio splits into what
  the pose costs and what the floor, noise and strays cost;
- with ``--repeat``, repeat: the canonical scan again, with the code search seeded by SEED + 1: the ratio of
  two searches of the same scan in the same frame, the noise floor of every ratio above (a target on the
  posed / canonical ratio cannot be tighter than this one's spread).

Printed per mesh: chamfer x10^3 (DeepSDF's convention: 30,000 points, squared, both directions, normalised
frame; the posed and old meshes are taken back to it by the true transform), the posed / canonical ratio, what
the search found and how far its turn and shift (all of it, and along the up axis) are from the truth; then
the median and max ratio. Results are cached per shape in WORK/results, so an interrupted bench resumes
(``--fresh`` redoes them).

    python benchmarks/bench_own_scan.py --data DATA --run RUN --work /tmp/bench_own_scan
    python benchmarks/bench_own_scan.py --data DATA --run RUN --limit 1 --resolution 64   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import trimesh

from deepsdf_ad import UP_CHOICES
from deepsdf_ad.commands.reconstruction import reconstruct_scan
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError, DataRoot
from deepsdf_ad.evaluate import Truth3D, scan_in_frame, select
from deepsdf_ad.metrics import CHAMFER_POINTS, surface_metrics, surface_points_normals
from deepsdf_ad.pose import AXES, axis_vector, rotation_to, yaw_matrix
from deepsdf_ad.runs import Run

NOISE = 0.005
"""Depth noise (standard deviation along the camera ray), in units of the unit radius."""
STRAYS = 0.02
"""Stray points, as a share of the scan and floor points."""


def capture(pts: np.ndarray, camera: np.ndarray | None, frame_up: str,
            rng: np.random.Generator) -> np.ndarray:
    """The scan (N, 3) (normalised frame) on a floor patch, with depth noise and strays (normalised frame)."""
    up = "xyz".index(frame_up)
    h = [a for a in range(3) if a != up]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    floor = np.empty((len(pts), 3))
    floor[:, up] = lo[up]
    for a in h:
        floor[:, a] = centre[a] + rng.uniform(-2, 2, len(pts)) * half[a]
    under = np.all([np.abs(floor[:, a] - centre[a]) <= half[a] for a in h], axis=0)
    floor = floor[~under]  # the object hides the floor it stands on
    both = np.concatenate([pts, floor])
    eye = camera if camera is not None else centre + 3.0 * np.eye(3)[up]
    ray = both - eye
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    both = both + ray * rng.normal(0.0, NOISE, (len(both), 1))
    blo, bhi = both.min(axis=0), both.max(axis=0)
    pad = 0.1 * (bhi - blo)
    stray = rng.uniform(blo - pad, bhi + pad, (int(STRAYS * len(both)), 3))
    return np.concatenate([both, stray])


def shape_pose(frame_up: str, index: int, seed: int) -> tuple[str, np.ndarray, np.random.Generator]:
    """The up axis and pose of held-out shape ``index`` (the first draw of its random stream), and the stream,
    which goes on to make its capture."""
    rng = np.random.default_rng([seed, index])
    up_label = UP_CHOICES[index % len(UP_CHOICES)]
    return up_label, random_pose(frame_up, up_label, rng), rng


def random_pose(frame_up: str, up_label: str, rng: np.random.Generator) -> np.ndarray:
    """Normalised -> input (4, 4): a turn about the frame's up axis, its up axis sent to ``up_label``, a scale
    10^U(-3, 3) and a shift of up to 10 object sizes."""
    scale = 10.0 ** rng.uniform(-3, 3)
    rot = rotation_to(axis_vector(frame_up), axis_vector(up_label)) @ yaw_matrix(rng.uniform(0, 2 * math.pi),
                                                                                 "xyz".index(frame_up))
    m = np.eye(4)
    m[:3, :3] = scale * rot
    m[:3, 3] = scale * rng.uniform(-10, 10, 3)
    return m


def oracle_scan(folder: Path, posed: Path, back: np.ndarray, camera, seed: int = 0) -> Path:
    """The capture at ``posed`` cleaned (floor, strays) as ``reconstruct --seed SEED`` cleans it, taken to the
    true normalised frame by ``back`` (4, 4) and written as a known-frame scan (with ``camera``, normalised
    frame)."""
    from deepsdf_ad.capture import clean_capture

    kept = clean_capture(formats.load_points(posed).points, rng=np.random.default_rng(seed)).points
    out = folder / "oracle.ply"
    formats.save_points_ply(out, kept @ back[:3, :3].T + back[:3, 3])
    meta = {"normalization": {"offset": [0.0, 0.0, 0.0], "scale": 1.0}}
    if camera is not None:
        meta["camera"] = camera
    formats.write_json(out.with_suffix(".json"), meta)
    return out


def chamfer_x1e3(mesh_path: Path, to_normalised: np.ndarray, true_pts: np.ndarray, true_n) -> float:
    """Chamfer x10^3 of the mesh at ``mesh_path`` (inf: none was made) taken by ``to_normalised`` (4, 4)."""
    if not mesh_path.is_file():
        return math.inf
    mesh = trimesh.load(mesh_path, process=False)
    if len(mesh.faces) == 0:
        return math.inf
    v = np.asarray(mesh.vertices) @ to_normalised[:3, :3].T + to_normalised[:3, 3]
    pts, normals = surface_points_normals(trimesh.Trimesh(v, mesh.faces, process=False), CHAMFER_POINTS)
    return 1e3 * surface_metrics(pts, normals, true_pts, true_n)["chamfer"]


def pose_error(found: np.ndarray, pose: np.ndarray) -> tuple[float, float, float]:
    """How far the found input -> normalised matrix (4, 4) is from inverting the true normalised -> input
    ``pose`` (4, 4): the turn left (degrees), the scale left (found / true) and the shift left (normalised
    units)."""
    a = found @ pose
    s = float(np.cbrt(np.linalg.det(a[:3, :3])))
    c = (np.trace(a[:3, :3] / s) - 1) / 2
    return math.degrees(math.acos(float(np.clip(c, -1, 1)))), s, float(np.linalg.norm(a[:3, 3]))


def known_frame_scan(root: DataRoot, ref, out: Path) -> tuple[Path, np.ndarray, np.ndarray | None, dict]:
    """The shape's first scan written at ``out`` (.ply) in the normalised frame, with a sidecar that says so
    (and gives the camera): (path, points, camera, sidecar)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pts, normals, camera = scan_in_frame(root, ref)
    formats.save_points_ply(out, pts, normals)
    meta = {"normalization": {"offset": [0.0, 0.0, 0.0], "scale": 1.0}}
    if camera is not None:
        meta["camera"] = np.asarray(camera, float).tolist()
    formats.write_json(out.with_suffix(".json"), meta)
    return out, pts, camera, meta


def shape_record(work: Path, root: DataRoot, truth: Truth3D, ref, index: int, run: Path, frame_up: str,
                 resolution: int, iterations: int | None, seed: int, with_camera: bool = True,
                 reuse_baselines: bool = False, oracle: bool = False) -> dict:
    """The three reconstructions of one held-out shape and their chamfers (files in WORK/shapes/<key>).
    ``with_camera``: the capture's sidecar gives the camera position (moved by the pose), as a depth sensor's
    capture knows it; without it the capture is bare points. ``reuse_baselines``: the canonical mesh an
    earlier bench left in WORK is kept, and the old one if it was made for the same pose (neither depends on
    the pose search). ``oracle``: a fourth reconstruction, the capture cleaned as ``reconstruct`` cleans it
    and put in the true normalised frame (the pose known): what the search would give with a perfect
    pose."""
    folder = work / "shapes" / ref.category / ref.id
    canon, pts, camera, meta = known_frame_scan(root, ref, folder / "canonical.ply")
    true_pts, true_n = truth.surface(ref)
    up_label, pose, rng = shape_pose(frame_up, index, seed)
    stamp = folder / "true_pose.json"  # the pose the meshes left here were made for (written once they are)
    same_pose = stamp.is_file() and np.allclose(formats.read_json(stamp)["pose"], pose)
    posed = folder / "capture.ply"
    formats.save_points_ply(posed, capture(pts, camera, frame_up, rng) @ pose[:3, :3].T + pose[:3, 3])
    posed.with_suffix(".json").unlink(missing_ok=True)
    if with_camera and camera is not None:
        formats.write_json(posed.with_suffix(".json"),
                           {"camera": (pose[:3, :3] @ np.asarray(camera, float) + pose[:3, 3]).tolist()})
    back = np.linalg.inv(pose)
    common = {"resolution": resolution, "iterations": iterations, "seed": seed, "device": "auto"}
    runs = [("canonical", canon, {}), ("posed", posed, {}), ("old", posed, {"pose_search": False})]
    if oracle:
        runs.append(("oracle", oracle_scan(folder, posed, back, meta.get("camera"), seed), {}))
    failed = {}
    for name, scan, extra in runs:
        out = folder / f"{name}_mesh.ply"
        if reuse_baselines and out.is_file() and (name == "canonical" or name == "old" and same_pose):
            continue
        out.unlink(missing_ok=True)
        try:
            reconstruct_scan(run, scan, out, **common, **extra)
        except DataError as e:  # counted as a failure (chamfer inf), as bench_quality counts them
            failed[name] = str(e)
    formats.write_json(stamp, {"pose": pose.tolist()})
    record = folder / "posed_mesh.json"
    found = json.loads(record.read_text()) if "posed" not in failed and record.is_file() else None
    scale = float(np.cbrt(np.linalg.det(pose[:3, :3])))
    rec = {"key": ref.key, "up": up_label, "scale": scale, "failed": failed,
           "camera": bool(with_camera and camera is not None),
           "canonical": chamfer_x1e3(folder / "canonical_mesh.ply", np.eye(4), true_pts, true_n),
           "posed": chamfer_x1e3(folder / "posed_mesh.ply", back, true_pts, true_n),
           "old": chamfer_x1e3(folder / "old_mesh.ply", back, true_pts, true_n),
           "oracle": chamfer_x1e3(folder / "oracle_mesh.ply", np.eye(4), true_pts, true_n) if oracle
           else math.nan,
           "found_up": found["transform"]["up"] if found else "-",
           "found_scale_ratio": found["transform"]["scale"] * scale if found else math.nan,
           "residual": found["fit"]["median_abs_sdf"] if found else math.nan,
           "poor": bool(found["fit"]["poor"]) if found else True,
           "dropped": found["points"]["dropped"] if found else {}}
    rec["ratio"] = rec["posed"] / rec["canonical"] if rec["canonical"] > 0 else math.inf
    rec["pose"] = pose.tolist()
    if found:
        a = np.asarray(found["transform"]["matrix"]) @ pose
        turn, _, shift = pose_error(np.asarray(found["transform"]["matrix"]), pose)
        rec.update(turn_error_deg=turn, shift_error=shift,
                   shift_error_up=float(a[AXES.index(frame_up), 3]))
    return rec


def repeat_chamfer(work: Path, root: DataRoot, truth: Truth3D, ref, run: Path, resolution: int,
                   iterations: int | None, seed: int) -> float:
    """Chamfer x10^3 of the canonical scan reconstructed again with the code search seeded by ``seed + 1``
    (inf: it failed). It depends on neither the capture nor the pose, so it is added to cached records."""
    folder = work / "shapes" / ref.category / ref.id
    scan = known_frame_scan(root, ref, folder / "repeat.ply")[0]
    out = folder / "repeat_mesh.ply"
    out.unlink(missing_ok=True)
    try:
        reconstruct_scan(run, scan, out, resolution=resolution, iterations=iterations, seed=seed + 1,
                         device="auto")
    except DataError:
        return math.inf
    true_pts, true_n = truth.surface(ref)
    return chamfer_x1e3(out, np.eye(4), true_pts, true_n)


def figure(work: Path, recs: list[dict], truth: Truth3D, refs: list, frame_up: str, out: Path) -> Path:
    """The capture, the old bounding-box path's mesh, the pose search's and the known frame's, and the truth,
    all taken back to the true normalised frame, for the shape whose posed / canonical ratio is the median."""
    from deepsdf_ad.viz.render import render_to_array, save_image

    pick = sorted(recs, key=lambda r: r["ratio"])[(len(recs) - 1) // 2]
    ref = next(r for r in refs if r.key == pick["key"])
    folder = work / "shapes" / ref.category / ref.id
    back = np.linalg.inv(np.asarray(pick["pose"]))

    def in_frame(path: Path, m: np.ndarray):
        geo = trimesh.load(path, process=False)
        v = np.asarray(geo.vertices) @ m[:3, :3].T + m[:3, 3]
        return trimesh.Trimesh(v, geo.faces, process=False) if hasattr(geo, "faces") else v

    cap = in_frame(folder / "capture.ply", back)
    cap = cap[np.linalg.norm(cap, axis=1) < 1.2]  # drawn near the object only (the floor and strays go on)
    panels = [cap, in_frame(folder / "old_mesh.ply", back), in_frame(folder / "posed_mesh.ply", back),
              in_frame(folder / "canonical_mesh.ply", np.eye(4)),
              truth.surface(ref)[0]]
    labels = ["capture (near the object)", f"bounding box: {pick['old']:.1f}",
              f"pose search: {pick['posed']:.1f}", f"known frame: {pick['canonical']:.1f}",
              f"truth {ref.key}"]
    img = render_to_array(panels, size=(240 * len(panels), 280), labels=labels, layout="row",
                          renderer="raycast", up=frame_up)
    return save_image(img, out)


def _errors(rec: dict) -> str:
    if "turn_error_deg" not in rec:
        return ""
    up = f" (up {rec['shift_error_up']:+.3f})" if "shift_error_up" in rec else ""
    return f"; turn off {rec['turn_error_deg']:.0f} deg, shift off {rec['shift_error']:.3f}{up}"


def _oracle(rec: dict) -> str:
    o = rec.get("oracle", math.nan)
    return "" if math.isnan(o) else f"; oracle {o:.3f} (ratio {o / rec['canonical']:.2f})"


def _repeat(rec: dict) -> str:
    r = rec.get("repeat", math.nan)
    return "" if math.isnan(r) else f"; repeat {r:.3f} (ratio {r / rec['canonical']:.2f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a prepared data root with scans (prep meshes --scans 1)")
    ap.add_argument("--run", required=True, help="a trained 3D autodecoder run on that data")
    ap.add_argument("--work", default="/tmp/bench_own_scan", help="folder for captures, meshes and results")
    ap.add_argument("--limit", type=int, help="at most N held-out shapes per category")
    ap.add_argument("--resolution", type=int, default=128, help="marching-cubes grid")
    ap.add_argument("--iterations", type=int, help="optimisation steps (default: the run's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the captures and poses")
    ap.add_argument("--fresh", action="store_true", help="recompute cached shapes")
    ap.add_argument("--reuse-baselines", action="store_true",
                    help="keep the canonical mesh an earlier bench left in WORK, and the old one if it "
                         "was made for the same pose (to compare variants of the pose search on the "
                         "same baselines)")
    ap.add_argument("--no-camera", action="store_true",
                    help="captures without their camera position (bare points; the canonical scan keeps it)")
    ap.add_argument("--oracle", action="store_true",
                    help="also reconstruct each capture cleaned and put in its true frame (the pose known): "
                         "what a perfect pose search would give; printed as a last column")
    ap.add_argument("--repeat", action="store_true",
                    help="also reconstruct each canonical scan again with another search seed (SEED + 1): "
                         "the noise floor of the ratios; added to cached results without redoing them")
    ap.add_argument("--figure", metavar="PNG",
                    help="also draw the median shape: capture, old path, pose search, known frame, truth "
                         "(chamfer x10^3 in the labels)")
    args = ap.parse_args(argv)
    work, root = Path(args.work), DataRoot(args.data)
    truth = Truth3D(root)
    frame_up = Run(args.run).config().reconstruct.frame_up
    recs = []
    print(f"{'shape':32s} {'up':>3s} {'scale':>9s} {'canonical':>9s} {'posed':>8s} {'old':>8s} "
          f"{'ratio':>6s}  found")
    split = root.shapes("test")
    index = {r.key: i for i, r in enumerate(split)}  # a shape's capture does not depend on --limit
    for ref in select(split, args.limit):
        i = index[ref.key]
        cache = work / "results" / f"{ref.category}_{ref.id}.json"
        rec = json.loads(cache.read_text()) if cache.is_file() and not args.fresh else None
        if rec is not None and rec.get("camera", False) != (not args.no_camera):
            rec = None  # cached with the other camera setting
        if rec is not None and args.oracle and math.isnan(rec.get("oracle", math.nan)):
            rec = None  # cached without the oracle (--reuse-baselines keeps the rest)
        if rec is None:
            rec = shape_record(work, root, truth, ref, i, Path(args.run), frame_up, args.resolution,
                               args.iterations, args.seed, with_camera=not args.no_camera,
                               reuse_baselines=args.reuse_baselines, oracle=args.oracle)
            formats.write_json(cache, rec)
        if args.repeat and math.isnan(rec.get("repeat", math.nan)):  # added to a cached record as it is
            rec["repeat"] = repeat_chamfer(work, root, truth, ref, Path(args.run), args.resolution,
                                           args.iterations, args.seed)
            formats.write_json(cache, rec)
        if "pose" not in rec:  # cached by an older bench: the pose is the first draw of the shape's stream
            rec["pose"] = shape_pose(frame_up, i, args.seed)[1].tolist()
        recs.append(rec)
        print(f"{rec['key']:32s} {rec['up']:>3s} {rec['scale']:9.2e} {rec['canonical']:9.3f} "
              f"{rec['posed']:8.3f} {rec['old']:8.3f} {rec['ratio']:6.2f}  up {rec['found_up']}, scale "
              f"x{rec['found_scale_ratio']:.3f}, residual "
              f"{rec['residual']:.4f}{' POOR' if rec['poor'] else ''}{_errors(rec)}"
              f"{''.join(f'; {k} failed: {v}' for k, v in rec['failed'].items())}"
              f"{_oracle(rec)}{_repeat(rec)}", flush=True)
    if not recs:
        print("no held-out shape with a scan")
        return 1
    ratio = np.array([r["ratio"] for r in recs])
    old = np.array([r["old"] / r["canonical"] if r["canonical"] > 0 else math.inf for r in recs])
    print(f"\n{len(recs)} shapes: posed / canonical chamfer median {np.median(ratio):.2f}, max "
          f"{ratio.max():.2f}; old / canonical median {np.median(old):.2f}, max {old.max():.2f}; "
          f"{sum(r['poor'] for r in recs)} flagged poor")
    orc = np.array([r.get("oracle", math.nan) / r["canonical"] for r in recs])
    if not np.isnan(orc).any():
        print(f"oracle (pose known) / canonical median {np.median(orc):.2f}, max {orc.max():.2f}")
    if args.repeat:  # failures (inf / inf) print as nan, not dropped
        rep = np.array([r.get("repeat", math.nan) / r["canonical"] for r in recs])
        spread = np.maximum(rep, 1 / rep)
        print(f"repeat (the canonical scan, another search seed) / canonical median {np.median(rep):.2f}, "
              f"max {rep.max():.2f}, min {rep.min():.2f}; the larger over the smaller: median "
              f"{np.median(spread):.2f}, max {spread.max():.2f}, above 2.5 for {int((spread > 2.5).sum())}")
    if args.figure:
        print(f"figure: {figure(work, recs, truth, root.shapes('test'), frame_up, Path(args.figure))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
