"""``deepsdf-ad``: each subcommand parses its flags and calls one library function.

Errors in the user's input (files, flags, configs) print one line ``deepsdf-ad: error: ...`` and exit 2.
Set ``DEEPSDF_AD_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from deepsdf_ad import PRECISIONS

EXIT_USAGE = 2


class UserError(Exception):
    """Raised for bad flags; printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line and exits 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def _resolution(text: str) -> int:
    v = _positive_int(text)
    if not 8 <= v <= 2048:
        raise argparse.ArgumentTypeError(f"must be between 8 and 2048, got {v}")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return v


def _positive_float(text: str) -> float:
    v = _finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def _seed(text: str) -> int:
    from deepsdf_ad.config import SEED_MAX

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {SEED_MAX}, got {v}")
    return v


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _workers(requested: int) -> int:
    """``--workers``, at most the CPUs this process may use (more only add processes), with a note."""
    cpus = _cpus()
    if requested > cpus:
        print(f"deepsdf-ad: note: --workers {requested} capped at the {cpus} CPUs available", file=sys.stderr)
        return cpus
    return requested


MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl")
"""What ``mesh``, ``reconstruct`` and ``scan`` can write; each file is written in the format its suffix says."""


def _suffix(path: str | None, allowed: tuple[str, ...], flag: str = "--out") -> None:
    if path is not None and Path(path).suffix.lower() not in allowed:
        raise UserError(f"{path}: {flag} must end in {', '.join(allowed)} (the format written follows the suffix)")


def _shard(text: str) -> tuple[int, int]:
    from data_prep.formats import DataError
    from data_prep.pipeline import parse_shard

    try:
        return parse_shard(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def _nonnegative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def _not_inputs(out, files=(), folders=(), runs=(), data=(), **kwargs) -> None:
    """Refuse an output that resolves to one of the command's inputs: ``files`` (and their sidecars),
    ``folders`` (and what is inside), the files of the run folders ``runs`` and of the data roots ``data``."""
    from deepsdf_ad.outputs import data_inputs, refuse_input_as_output, run_inputs

    files, folders = list(files), list(folders)
    for root, parts in [(r, run_inputs(r)) for r in runs if r] + [(d, data_inputs(d)) for d in data if d]:
        files += [root, *parts[0]]
        folders += parts[1]
    refuse_input_as_output(out, files, folders, **kwargs)


# ---- commands --------------------------------------------------------------------------------
def _prep_meshes(args) -> int:
    from data_prep.meshes import SamplingConfig
    from data_prep.pipeline import PrepConfig, prep_meshes

    _not_inputs(args.out, folders=[args.src])
    sampling = SamplingConfig(samples=args.samples, variances=tuple(args.variances),
                              uniform_fraction=args.uniform_fraction)
    cfg = PrepConfig(sampling, test_fraction=args.test_fraction, seed=args.seed, scans=args.scans,
                     max_ambiguous=args.max_ambiguous)
    manifest = prep_meshes(args.src, args.out, cfg, workers=_workers(args.workers), progress=not args.quiet, shard=args.shard,
                           force=args.force)
    s = manifest["summary"]
    for r in manifest["meshes"]:
        if r["status"] != "ok":
            print(f"  failed: {r['reason']}")
    print(f"prep: {_shard_label(args.shard)}{s['ok']} of {s['meshes']} meshes ok, {s['failed']} failed "
          f"({s['skipped_unchanged']} unchanged, skipped) -> {args.out}")
    if args.shard:
        print(f"prep: when every shard is done: deepsdf-ad prep merge {args.out}")
        return 0
    if s["ok"] == 0:
        raise UserError(f"{args.src}: no mesh could be prepared (see {Path(args.out) / 'manifest.json'})")
    if args.strict and s["failed"]:
        raise UserError(f"{args.src}: {s['failed']} meshes failed and --strict is set "
                        f"(see {Path(args.out) / 'manifest.json'})")
    return 0


def _objects_range(text: str) -> tuple[int, int]:
    parts = text.split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None:
        raise argparse.ArgumentTypeError(f"'{text}' is not a count or a range like 2-5")
    if not 1 <= lo <= hi <= 50:
        raise argparse.ArgumentTypeError(f"need 1 <= MIN <= MAX <= 50, got {text}")
    return lo, hi


def _prep_scenes(args) -> int:
    from data_prep.meshes import SamplingConfig
    from data_prep.scenes import SceneConfig, prep_scenes

    _not_inputs(args.out, folders=[args.src])
    cfg = SceneConfig(SamplingConfig(samples=args.samples), scenes=args.scenes, objects=args.objects,
                      room_size=args.room_size, gap=args.gap, test_fraction=args.test_fraction, seed=args.seed,
                      scans=args.scans, max_ambiguous=args.max_ambiguous)
    manifest = prep_scenes(args.src, args.out, cfg, workers=_workers(args.workers), progress=not args.quiet,
                           force=args.force)
    s = manifest["summary"]
    for r in manifest["meshes"]:
        if r["status"] != "ok":
            print(f"  failed: {r['reason']}")
    print(f"prep: {s['ok']} of {s['scenes']} scenes ok ({s['train']} train, {s['test']} test), {s['failed']} failed "
          f"({s['skipped_unchanged']} unchanged, skipped); {s['sources_ok']} of {s['sources']} meshes usable "
          f"-> {args.out}")
    if s["ok"] == 0:
        raise UserError(f"{args.src}: no scene could be prepared (see {Path(args.out) / 'manifest.json'})")
    return 0


def _prep_digits(args) -> int:
    from data_prep.digits import DigitSamplingConfig, download_mnist, parse_labels, prep_digits

    _not_inputs(args.out, files=[args.idx_dir])
    if args.download:
        download_mnist(args.idx_dir, progress=not args.quiet)
    cfg = DigitSamplingConfig(samples=args.samples, field=args.field)
    manifest = prep_digits(args.idx_dir, args.out, cfg, labels=parse_labels(args.labels), limit=args.limit,
                           test_fraction=args.test_fraction, seed=args.seed, progress=not args.quiet,
                           shard=args.shard, force=args.force)
    s = manifest["summary"]
    if args.shard:
        print(f"prep: {_shard_label(args.shard)}{s['ok']} of {s['digits']} digits ok, {s['failed']} failed, "
              f"field {manifest['field']} -> {args.out}")
        print(f"prep: when every shard is done: deepsdf-ad prep merge {args.out}")
        return 0
    print(f"prep: {s['ok']} of {s['digits']} digits ok ({s['train']} train, {s['test']} test), "
          f"{s['failed']} failed, field {manifest['field']} -> {args.out}")
    if s["ok"] == 0:
        raise UserError(f"{args.idx_dir}: no digit could be prepared (see {Path(args.out) / 'manifest.json'})")
    return 0


def _shard_label(shard: tuple[int, int] | None) -> str:
    return f"shard {shard[0]}/{shard[1]}: " if shard else ""


def _prep_merge(args) -> int:
    from data_prep.pipeline import merge_shards

    manifest = merge_shards(args.data, progress=not args.quiet)
    s = manifest["summary"]
    kind = "digits" if manifest.get("kind") == "digits" else "meshes"
    print(f"prep merge: {s['ok']} of {s[kind]} {kind} ok, {s['failed']} failed -> {args.data}")
    if s["ok"] == 0:
        raise UserError(f"{args.data}: no shape was prepared by any shard (see {Path(args.data) / 'manifest.json'})")
    return 0


def _train(args) -> int:
    from deepsdf_ad.config import load_config
    from deepsdf_ad.train import train, train_seeds

    _not_inputs(args.out, files=[args.config, args.split], data=[args.data])
    cfg = load_config(args.config, args.set)  # a bad config fails here, once, before any rank starts
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from deepsdf_ad.distributed import launch

        return launch(args.argv, args.nproc)
    from deepsdf_ad.distributed import shutdown

    max_seconds = None if args.max_minutes is None else 60.0 * args.max_minutes
    try:
        if args.seeds:
            runs = train_seeds(cfg, args.data, args.out, args.seeds, epochs=args.epochs, device=args.device,
                               split_file=args.split, progress=not args.quiet, max_seconds=max_seconds,
                               restart=args.restart, force=args.force)
        else:
            runs = [train(cfg, args.data, args.out, epochs=args.epochs, device=args.device, split_file=args.split,
                          progress=not args.quiet, max_seconds=max_seconds, restart=args.restart,
                          force=args.force)]
    finally:
        shutdown()
    if os.environ.get("RANK", "0") != "0":
        return 0  # rank 0 reports
    for run in runs:
        rows = run.metrics()
        last = rows[-1] if rows else {}
        total = run.config().train.epochs
        left = f" (stopped by --max-minutes at {len(rows)} of {total}; run the same command to go on)" \
            if len(rows) < total else ""
        print(f"train: {len(rows)} epochs, final loss {last.get('loss', float('nan')):.6f} -> {run.path}{left}")
    return 0


def _mesh(args) -> int:
    from deepsdf_ad.meshing import mesh_training_shape

    _not_inputs(args.out, runs=[args.run])
    _suffix(args.out, (*MESH_SUFFIXES, ".png"))
    info = mesh_training_shape(args.run, args.shape, args.out, resolution=args.resolution, device=args.device,
                               method=args.method, precision=args.precision or "fp32")
    if "contours" in info:  # a 2D run: a picture of the field
        print(f"mesh: field picture with {info['contours']} contours ({info['contour_points']} points) -> {args.out}")
    else:
        print(f"mesh: {info['vertices']} vertices, {info['faces']} faces -> {args.out}")
    return 0


def _scan(args) -> int:
    import numpy as np

    from data_prep.meshes import load_mesh, normalization
    from data_prep.scans import CameraConfig, save_scan, scan_mesh

    _not_inputs(args.out, files=[args.mesh], out_sidecar=True)
    _suffix(args.out, (".ply",))  # a point cloud with normals and the camera in its header: PLY only
    mesh = load_mesh(args.mesh)
    cam = CameraConfig(azimuth=args.azimuth, elevation=args.elevation, resolution=args.resolution, fov=args.fov,
                       distance=args.distance, noise=args.noise, up=args.up)
    scan = scan_mesh(mesh, cam, np.random.default_rng(args.seed))
    save_scan(args.out, scan, normalization(mesh))
    print(f"scan: {len(scan.points)} points seen from {np.round(scan.camera, 4).tolist()} -> {args.out}")
    return 0


def _reconstruct(args) -> int:
    from deepsdf_ad.reconstruct import reconstruct_file

    _not_inputs(args.out, files=[args.partial, args.norm], runs=[args.run])
    _suffix(args.out, (*MESH_SUFFIXES, ".png"))
    info = reconstruct_file(args.run, args.partial, args.out, resolution=args.resolution,
                            iterations=args.iterations, device=args.device, norm=args.norm, seed=args.seed,
                            mode=args.mode, method=args.method, precision=args.precision,
                            restarts=args.restarts)
    loss = "" if info["final_loss"] is None else f", final loss {info['final_loss']:.5f}"
    print(f"reconstruct: {info['points']} points, mode {info['mode']}{loss}, "
          f"normalisation {info['normalization']} -> {info['out']}")
    return 0


def _eval(args) -> int:
    from deepsdf_ad.evaluate import EvalOptions, evaluate_run, write_eval

    _not_inputs(args.out, runs=[args.run], data=[args.data])
    opts = EvalOptions(split=args.split, input=args.input, mode=args.mode, resolution=args.resolution,
                       limit=args.limit, seed=args.seed)
    result = evaluate_run(args.run, args.data, opts, device=args.device, progress=not args.quiet)
    s = result["summary"]["all"]
    parts = [f"{k} mean {s[k]['mean']:.4g} median {s[k]['median']:.4g}" for k in result["metrics"] if k in s]
    print(f"eval: {s['shapes']} {args.split} shapes ({args.input}, mode {result['mode']}), {s['failed']} failed; "
          + "; ".join(parts))
    if args.out:
        print(f"eval: per-shape and summary metrics -> {write_eval(result, args.out)}")
    return 0


def _compare_options(args, base=None):
    from dataclasses import replace

    from deepsdf_ad.compare import CompareOptions

    opts = base or CompareOptions()
    changes = {k: getattr(args, k) for k in ("limit", "resolution") if getattr(args, k, None) is not None}
    return replace(opts, **changes)


def _print_report(results: dict, report_dir) -> None:
    rec = results["sections"].get("reconstruction")
    if rec:
        for name, m in rec["methods"].items():
            st = m["stats"]["all"]
            parts = [f"{k} {st[k]['mean']:.4g}" for k in ("chamfer_x1e3", "fscore", "iou", "near_contour_error")
                     if st.get(k)]
            print(f"  held-out {name} ({m['mode']}): " + ", ".join(parts))
    print(f"report -> {Path(report_dir) / 'report.md'} and report.html ({results['seconds']} s)")


def _compare(args) -> int:
    from deepsdf_ad.compare import compare
    from viz.report import write_report

    _not_inputs(args.out, runs=args.runs, data=[args.data, args.ood])
    results = compare(args.runs, args.data, args.out, ood=args.ood, opts=_compare_options(args), device=args.device,
                      progress=not args.quiet, report=write_report)
    _print_report(results, args.out)
    return 0


def _experiment(args) -> int:
    from deepsdf_ad.experiment import run_experiment
    from viz.report import write_report

    _not_inputs(args.out, files=[args.experiment], data=[args.data, args.ood])
    results = run_experiment(args.experiment, args.data, args.out, ood=args.ood, overrides=args.set,
                             device=args.device, progress=not args.quiet, report=write_report)
    _print_report(results, Path(args.out) / "report")
    print(f"experiment: {results['experiment_seconds']} s -> {args.out}")
    return 0


def _article(args) -> int:
    data, ood = _name_dirs(args.data, "--data"), _name_dirs(args.ood, "--ood")
    from deepsdf_ad.article import BuildOptions, build_article

    work = Path(args.work or ("article_quick" if args.quick else "article_out"))
    opts = BuildOptions(quick=args.quick, work=work, out=Path(args.out or (work / "docs" if args.quick else "docs")),
                        data=data, ood=ood, only=args.only,
                        overrides=args.set, max_meshes=args.max_meshes, reuse=args.reuse, device=args.device, readme=args.readme, progress=not args.quiet)
    if args.shared:
        opts.shared = Path(args.shared)
    info = build_article(opts)
    ran = ", ".join(f"{k}: {v}" for k, v in info["experiments"].items())
    print(f"article: {info['tables']} tables, {info['figures']} figures ({ran}) in {info['seconds']:.0f} s "
          f"-> {info['article']}")
    return 0


def _name_dirs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"{flag} {item}: expected NAME=DIR, e.g. {flag} digits=data/digits")
        if not Path(folder).is_dir():
            raise UserError(f"{folder}: data folder not found ({flag} {item})")
        out[name] = folder
    return out


def _sample(args) -> int:
    from deepsdf_ad.generate import sample_shapes

    _not_inputs(args.out, runs=[args.run])
    info = sample_shapes(args.run, args.n, args.out, seed=args.seed, resolution=args.resolution, device=args.device,
                         progress=not args.quiet)
    print(f"sample: {len(info['files'])} file(s) for {info['shapes']} shapes -> {args.out}")
    return 0


def _interpolate(args) -> int:
    from deepsdf_ad.generate import interpolate_shapes

    _not_inputs(args.out, runs=[args.run])
    info = interpolate_shapes(args.run, args.a, args.b, args.steps, args.out, resolution=args.resolution,
                              device=args.device, progress=not args.quiet)
    print(f"interpolate: {info['a']} -> {info['b']} in {info['shapes']} steps, {len(info['files'])} file(s) "
          f"-> {args.out}")
    return 0


def _image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not WIDTHxHEIGHT, e.g. 800x600") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"each side must be between 16 and 8192 pixels, got {text}")
    return w, h


def _view(args) -> int:
    from viz.viewer import view

    _not_inputs(args.screenshot, files=[*args.files, args.color_by_distance], runs=[args.run], flag="--screenshot")
    info = view(args.files, run=args.run, shapes=args.shape, layout=args.layout,
                color_by_distance_ref=args.color_by_distance, screenshot=args.screenshot, size=args.size,
                azimuth=args.azimuth, elevation=args.elevation, up=args.up, resolution=args.resolution,
                renderer=args.renderer, device=args.device)
    if "distance_max" in info:
        means = ", ".join(f"{n} {m:.4g}" for n, m in zip(info["inputs"], info["distance_mean"], strict=True))
        print(f"view: distance to {args.color_by_distance}: mean {means}; colour bar 0 to {info['distance_max']:.4g}")
    if "screenshot" in info:
        print(f"view: {len(info['inputs'])} input(s) -> {info['screenshot']}")
    return 0


def _slice(args) -> int:
    from viz.slices import slice_run

    _not_inputs(args.out, runs=[args.run])
    s = slice_run(args.run, args.shape, args.out, axis=args.axis, at=args.at, resolution=args.resolution,
                  device=args.device)
    print(f"slice: sdf in [{s.values.min():.4f}, {s.values.max():.4f}] on {s.axis_names[0]}-{s.axis_names[1]} "
          f"-> {s.path}")
    return 0


def _plot(args) -> int:
    from viz.plots import plot_runs

    _not_inputs(args.out, runs=args.runs)
    out = plot_runs(args.runs, args.out)
    print(f"plot: {len(args.runs)} run(s) -> {out}")
    return 0


def _demo(args) -> int:
    from deepsdf_ad.demo import run_demo

    result = run_demo(args.out, minutes=args.minutes, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


# ---- parser ----------------------------------------------------------------------------------
def _add_meshing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("adaptive", "dense"), default="adaptive",
                   help="marching-cubes grid evaluated coarse-to-fine (default) or densely (the reference)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="decoder arithmetic (bf16/fp16: autocast, faster, error in README; auto: bf16 where the "
                        "processor has it natively, else fp32): the meshing queries, and for reconstruct also the "
                        "code optimisation (default: fp32; for reconstruct the run's reconstruct.precision)")


def _add_shard(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="process only shard I of N (I = 0..N-1; shapes sorted by category/id, dealt round-robin); "
                        "shards may run at once into the same DATA; then 'deepsdf-ad prep merge DATA'")


def _add_force(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--force", action="store_true",
                   help=f"write into --out even if it is a non-empty folder that is not a {kind} folder of ours "
                        "(files of ours may replace files there)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="deepsdf-ad", description="Neural signed-distance fields: autodecoder vs autoencoder.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    prep = sub.add_parser("prep", help="turn meshes (or digits) into SDF samples on disk")
    prep_sub = prep.add_subparsers(dest="kind", metavar="KIND", parser_class=Parser)
    prep_sub.required = True
    pm = prep_sub.add_parser("meshes", help="sample signed distances from a folder of meshes",
                             description="Sample SDF points from every mesh below SRC (category = folder name, "
                                         "id = file stem) into DATA, in DeepSDF's format.")
    pm.add_argument("src", metavar="SRC", help="folder of meshes (.obj .off .ply .stl), searched recursively")
    pm.add_argument("--out", required=True, metavar="DATA", help="data folder to write")
    pm.add_argument("--samples", type=_positive_int, default=500_000, help="SDF samples per mesh (default 500000)")
    pm.add_argument("--test-fraction", type=_fraction, default=0.2, help="share of each category held out for test")
    pm.add_argument("--workers", type=_positive_int, default=1, help="meshes processed in parallel")
    pm.add_argument("--seed", type=_seed, default=0, help="random seed")
    pm.add_argument("--variances", type=_positive_float, nargs=2, default=(0.005, 0.0005), metavar=("V1", "V2"),
                    help="variances of the two near-surface noise levels (default 0.005 0.0005, DeepSDF's)")
    pm.add_argument("--uniform-fraction", type=_fraction, default=3 / 50,
                    help="share of samples uniform in [-1,1]^3 (default 0.06 = 3/50)")
    pm.add_argument("--scans", type=_nonnegative_int, default=0, metavar="K",
                    help="also write K partial scans per test shape to DATA/scans/<category>/<id>_<k>.ply")
    pm.add_argument("--max-ambiguous", type=_fraction, default=0.05,
                    help="reject a mesh when more than this share of near-surface samples has an ambiguous "
                         "sign (default 0.05)")
    pm.add_argument("--strict", action="store_true", help="exit with an error if any mesh failed")
    _add_force(pm, "data")
    _add_shard(pm)
    pm.add_argument("--quiet", action="store_true", help="no progress bar")
    pm.set_defaults(func=_prep_meshes)

    ps = prep_sub.add_parser("scenes", help="compose scenes of several meshes and sample them",
                             description="Place 2-5 meshes of SRC (category = folder name) on the floor of a room, "
                                         "without overlaps, and sample each scene's signed distances into DATA "
                                         "(category 'scene'; scene meshes in DATA/scene_meshes). Test scenes are "
                                         "made only of test meshes.")
    ps.add_argument("src", metavar="SRC", help="folder of meshes (.obj .off .ply .stl), one subfolder per category")
    ps.add_argument("--out", required=True, metavar="DATA", help="data folder to write")
    ps.add_argument("--scenes", required=True, type=_positive_int, metavar="N", help="scenes in total (train + test)")
    ps.add_argument("--objects", type=_objects_range, default=(2, 5), metavar="MIN-MAX",
                    help="objects per scene, uniform in MIN..MAX (default 2-5)")
    ps.add_argument("--room-size", type=_positive_float, default=4.0, metavar="M",
                    help="side of the square room in metres (default 4); objects have plausible sizes in metres")
    ps.add_argument("--gap", type=_finite_float, default=0.1, metavar="M",
                    help="smallest distance between two objects' footprints, metres (default 0.1)")
    ps.add_argument("--samples", type=_positive_int, default=500_000, help="SDF samples per scene (default 500000)")
    ps.add_argument("--test-fraction", type=_fraction, default=0.2,
                    help="share of the meshes (per category) and of the scenes held out for test (default 0.2)")
    ps.add_argument("--scans", type=_nonnegative_int, default=0, metavar="K",
                    help="also write K partial scans per test scene to DATA/scans/scene/<id>_<k>.ply")
    ps.add_argument("--max-ambiguous", type=_fraction, default=0.05,
                    help="leave out a mesh whose near-surface signs are ambiguous for more than this share")
    ps.add_argument("--workers", type=_positive_int, default=1, help="meshes and scenes processed in parallel")
    _add_force(ps, "data")
    ps.add_argument("--seed", type=_seed, default=0, help="random seed")
    ps.add_argument("--quiet", action="store_true", help="no progress bar")
    ps.set_defaults(func=_prep_scenes)

    pd = prep_sub.add_parser("digits", help="MNIST digits as 2D signed-distance fields or heightfields",
                             description="Turn the digits of the MNIST IDX files in IDX_DIR into samples in DATA "
                                         "(category = label, id = <file prefix>-<index>, e.g. t10k-00042).")
    pd.add_argument("idx_dir", metavar="IDX_DIR", help="folder of *-images-idx3-ubyte[.gz] + *-labels-idx1-ubyte[.gz]")
    pd.add_argument("--out", required=True, metavar="DATA", help="data folder to write")
    pd.add_argument("--labels", help="digits to keep, e.g. 0-4 or 1,3,7 (default all)")
    pd.add_argument("--limit", type=_positive_int, help="at most N digits per IDX file (the first ones)")
    pd.add_argument("--test-fraction", type=_fraction, default=0.2, help="share of each label held out for test")
    pd.add_argument("--field", choices=("sdf", "height"), default="sdf",
                    help="sdf: signed distance to the 0.5 contour; height: intensity (+ a 3D heightfield solid)")
    pd.add_argument("--samples", type=_positive_int, default=4096, help="samples per digit (default 4096)")
    pd.add_argument("--seed", type=_seed, default=0, help="random seed")
    _add_force(pd, "data")
    pd.add_argument("--download", action="store_true",
                    help="first fetch the standard MNIST files into IDX_DIR (checked against their MD5)")
    _add_shard(pd)
    pd.add_argument("--quiet", action="store_true", help="no progress bar")
    pd.set_defaults(func=_prep_digits)

    pg = prep_sub.add_parser("merge", help="combine the shards of a sharded prep (--shard I/N) into DATA",
                             description="Check that DATA/shards holds every shard-I-of-N.json of one sharding, "
                                         "all finished with the same flags, then write DATA's splits and "
                                         "manifest.json (and --scans), as one unsharded run would.")
    pg.add_argument("data", metavar="DATA", help="data folder the shards wrote into")
    pg.add_argument("--quiet", action="store_true", help="no progress bar")
    pg.set_defaults(func=_prep_merge)

    tr = sub.add_parser("train", help="train a model (resumes if RUN exists)",
                        description="Train on DATA's train split into RUN; running it again resumes, with the "
                                    "run's own config (only --epochs may change). One train at a time per RUN.")
    tr.add_argument("--config", required=True, help="YAML preset, e.g. configs/shapes_small.yaml")
    tr.add_argument("--data", required=True, metavar="DATA", help="data folder (ours or DeepSDF's)")
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder")
    tr.add_argument("--epochs", type=_positive_int, help="override the config's epoch count")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set train.shapes_per_batch=16 (repeatable)")
    tr.add_argument("--split", help="split JSON to train on (default DATA/splits/train.json)")
    tr.add_argument("--max-minutes", type=_positive_float, metavar="M",
                    help="stop with a checkpoint after the first epoch that ends past M minutes of this call; "
                         "the same command again goes on from there")
    tr.add_argument("--seeds", type=_seed, nargs="+", metavar="K",
                    help="train once per seed into RUN/seed_K (train.seed = K); compare pools them")
    tr.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                    help="train with N processes on this machine (DDP: gloo on CPU, NCCL with one GPU per "
                         "process); the same as 'torchrun --nproc_per_node N -m deepsdf_ad train ...'")
    _add_force(tr, "run")
    tr.add_argument("--restart", action="store_true",
                    help="start over in a run folder whose metrics record epochs but whose checkpoints are gone "
                         "(its metrics.jsonl is overwritten)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(tr)
    tr.set_defaults(func=_train)

    me = sub.add_parser("mesh", help="extract the mesh of a training shape",
                        description="Mesh a training shape of RUN (normalised frame) with marching cubes; for "
                                    "a 2D run, write a PNG of the field with its zero contour (marching squares).")
    me.add_argument("--run", required=True, help="run folder")
    me.add_argument("--shape", required=True, metavar="ID", help="shape id or category/id")
    me.add_argument("--out", required=True, help="output mesh (.ply, .obj, .off, .stl); .png for a 2D run")
    me.add_argument("--resolution", type=_resolution, help="grid points per axis (default: the config's)")
    _add_meshing(me)
    _add_device(me)
    me.set_defaults(func=_mesh)

    sc = sub.add_parser("scan", help="virtual depth scan of a mesh -> partial point cloud",
                        description="A pinhole depth camera (ray cast, no OpenGL) views MESH; writes the visible "
                                    "points with normals in the mesh's frame, the camera in the header and a "
                                    "sidecar .json.")
    sc.add_argument("mesh", metavar="MESH", help="mesh file")
    sc.add_argument("--out", required=True, metavar="PARTIAL.ply", help="output point cloud")
    sc.add_argument("--azimuth", type=_finite_float, default=30.0, help="camera azimuth in degrees")
    sc.add_argument("--elevation", type=_finite_float, default=20.0, help="camera elevation in degrees")
    sc.add_argument("--resolution", type=_resolution, default=128, help="image size in pixels")
    sc.add_argument("--fov", type=_finite_float, default=50.0, help="vertical field of view in degrees")
    sc.add_argument("--distance", type=_finite_float, default=2.5, help="camera distance / bounding radius")
    sc.add_argument("--noise", type=_finite_float, default=0.0, help="depth noise std / bounding radius")
    sc.add_argument("--up", choices=("z", "y"), default="z", help="vertical axis of the mesh")
    sc.add_argument("--seed", type=_seed, default=0, help="seed of the depth noise")
    sc.set_defaults(func=_scan)

    rc = sub.add_parser("reconstruct", help="complete a shape from a partial scan",
                        description="Find a latent code that explains PARTIAL (surface points, and free space "
                                    "along the camera rays when known), then mesh it in PARTIAL's frame.")
    rc.add_argument("partial", metavar="PARTIAL.ply",
                    help="partial point cloud (from 'deepsdf-ad scan' or a sensor); for a 2D run a PNG of a partly "
                         "masked digit (alpha 0 = unknown) or 2D contour points (.npy/.txt)")
    rc.add_argument("--run", required=True, help="trained run folder")
    rc.add_argument("--out", required=True, help="output mesh (.png for a 2D run)")
    rc.add_argument("--resolution", type=_resolution, help="marching-cubes grid points per axis")
    rc.add_argument("--iterations", type=_positive_int, help="optimisation steps (default: the config's)")
    rc.add_argument("--restarts", type=_positive_int,
                    help="starts optimised side by side; the one with the lowest loss goes on (default: the config's "
                         "reconstruct.restarts)")
    rc.add_argument("--norm", help="normalisation .npz (offset, scale) of the object, if not in the sidecar")
    rc.add_argument("--seed", type=_seed, default=0, help="random seed")
    rc.add_argument("--mode", choices=("optimise", "encode", "encode+refine"),
                    help="optimise the code (default for autodecoder runs), encode the points in one pass "
                         "(default for autoencoder runs), or encode then optimise from there")
    _add_meshing(rc)
    _add_device(rc)
    rc.set_defaults(func=_reconstruct)

    ev = sub.add_parser("eval", help="reconstruct a split's shapes, mesh them and measure them",
                        description="Reconstruct every shape of DATA's split with RUN (optimise or encode), mesh "
                                    "it and write per-shape and summary metrics (chamfer x1e3, chamfer-L1, "
                                    "F-score, normal consistency, IoU; IoU and near-contour error for digits).")
    ev.add_argument("--run", required=True, help="trained run folder")
    ev.add_argument("--data", required=True, metavar="DATA", help="data folder")
    ev.add_argument("--split", choices=("test", "train"), default="test", help="shapes to evaluate (default test)")
    ev.add_argument("--input", choices=("full", "scan"), default="full",
                    help="full: SDF samples / surface points; scan: a partial view (DATA/scans; half a contour in 2D)")
    ev.add_argument("--out", metavar="EVAL.json", help="write per-shape and summary metrics here")
    ev.add_argument("--mode", choices=("optimise", "encode", "encode+refine"),
                    help="how codes are found (default: optimise for autodecoder runs, encode for autoencoder runs)")
    ev.add_argument("--resolution", type=_resolution, help="grid points per axis (default: the config's)")
    ev.add_argument("--limit", type=_positive_int, metavar="N", help="at most N shapes per category")
    ev.add_argument("--seed", type=_seed, default=0, help="random seed")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(ev)
    ev.set_defaults(func=_eval)

    co = sub.add_parser("compare", help="measure several runs on the same shapes; write a report",
                        description="Evaluate each RUN (a run folder or a folder of seed_K runs, pooled) on DATA: "
                                    "representation, held-out reconstruction, completion from partial views, "
                                    "out-of-distribution (--ood), generation, training curves; write "
                                    "REPORT_DIR/report.md and report.html. Refuses runs that differ in data, "
                                    "decoder, code length, samples per step or epochs.")
    co.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or folders of seed_K runs)")
    co.add_argument("--data", required=True, metavar="DATA", help="the data folder the runs were trained on")
    co.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for the report")
    co.add_argument("--ood", metavar="DATA2", help="data folder of out-of-distribution shapes (its test split)")
    co.add_argument("--limit", type=_positive_int, metavar="N", help="at most N shapes per category per section")
    co.add_argument("--resolution", type=_resolution, help="grid points per axis (default: the config's)")
    co.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(co)
    co.set_defaults(func=_compare)

    ex = sub.add_parser("experiment", help="train every method of an experiment preset, then compare them",
                        description="Train each method of EXP.yaml (configs/experiments/) on DATA, one run per "
                                    "seed, into DIR/runs, and write the comparison to DIR/report. Running it "
                                    "again resumes.")
    ex.add_argument("experiment", metavar="EXP.yaml", help="experiment preset, e.g. configs/experiments/ad_vs_ae_digits.yaml")
    ex.add_argument("--data", required=True, metavar="DATA", help="data folder")
    ex.add_argument("--out", required=True, metavar="DIR", help="folder for runs and report")
    ex.add_argument("--ood", metavar="DATA2", help="data folder of out-of-distribution shapes")
    ex.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every method (repeatable)")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(ex)
    ex.set_defaults(func=_experiment)

    ar = sub.add_parser("article", help="rerun the experiment presets and regenerate docs/autodecoders.md",
                        description="Prepare the data and run every experiment preset the article reports "
                                    "(deepsdf_ad/article.py: EXPERIMENTS) into WORK, then fill docs/article/"
                                    "autodecoders.md.in with their tables and figures: OUT/autodecoders.md and "
                                    "OUT/images/article/. --quick: CI-sized data and training (a minute or two).")
    ar.add_argument("--quick", action="store_true", help="CI-sized run: numbers check the machinery only")
    ar.add_argument("--out", metavar="DIR", help="folder of the article (default: docs; with --quick: WORK/docs)")
    ar.add_argument("--work", metavar="DIR", help="folder for data, runs and reports (default: article_out; "
                                                   "with --quick: article_quick)")
    ar.add_argument("--shared", metavar="DIR", help="the shared data (meshes/, mnist/; default: ../shared/data "
                                                    "beside the repository)")
    ar.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                    help="use this data folder for experiment NAME instead of preparing it (repeatable)")
    ar.add_argument("--ood", action="append", default=[], metavar="NAME=DIR",
                    help="out-of-distribution data folder for experiment NAME (repeatable)")
    ar.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments (the others are "
                                                               "reported as not run)")
    ar.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every method of the experiments run (a reduced run; the "
                         "article shows it in the commands)")
    ar.add_argument("--max-meshes", type=_positive_int, metavar="N",
                    help="at most N meshes per category in the mesh experiments (a reduced run; the article says so)")
    ar.add_argument("--reuse", action="store_true", help="reuse experiments whose WORK/NAME/report/results.json "
                                                         "exists (no prep, no training): re-render the article")
    ar.add_argument("--readme", metavar="README.md", help="also rewrite the headline block of this README")
    ar.add_argument("--quiet", action="store_true", help="print only the summary line")
    _add_device(ar)
    ar.set_defaults(func=_article)

    sa = sub.add_parser("sample", help="new shapes from codes drawn from the training codes' Gaussian",
                        description="Fit a Gaussian to RUN's training codes, draw K codes and decode them: a grid "
                                    "PNG for a 2D run, meshes for a 3D run.")
    sa.add_argument("--run", required=True, help="trained run folder")
    sa.add_argument("--n", type=_positive_int, default=16, metavar="K", help="shapes to draw (default 16)")
    sa.add_argument("--out", required=True, metavar="DIR", help="output folder")
    sa.add_argument("--resolution", type=_resolution, help="grid points per axis (default: the config's)")
    sa.add_argument("--seed", type=_seed, default=0, help="random seed")
    sa.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(sa)
    sa.set_defaults(func=_sample)

    ip = sub.add_parser("interpolate", help="shapes between the codes of two training shapes",
                        description="Decode codes on the line between training shapes A and B: a row PNG for a "
                                    "2D run, meshes for a 3D run.")
    ip.add_argument("--run", required=True, help="trained run folder")
    ip.add_argument("--a", required=True, metavar="ID", help="first training shape (id or category/id)")
    ip.add_argument("--b", required=True, metavar="ID", help="second training shape")
    ip.add_argument("--steps", type=_positive_int, default=8, help="shapes including both ends (default 8)")
    ip.add_argument("--out", required=True, metavar="DIR", help="output folder")
    ip.add_argument("--resolution", type=_resolution, help="grid points per axis (default: the config's)")
    ip.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(ip)
    ip.set_defaults(func=_interpolate)

    vw = sub.add_parser("view", help="open meshes and point clouds in the open3d viewer, or render a picture",
                        description="Show meshes and point clouds side by side, each labelled, in the open3d "
                                    "viewer (needs a display), or with --screenshot render the same view to a "
                                    "PNG headless (no display or GPU needed).")
    vw.add_argument("files", nargs="*", metavar="FILE", help="meshes or point clouds (.ply .obj .off .stl)")
    vw.add_argument("--run", help="run folder whose training shapes --shape shows (meshed with marching cubes)")
    vw.add_argument("--shape", action="append", default=[], metavar="ID",
                    help="training shape id or category/id of --run (repeatable)")
    vw.add_argument("--layout", choices=("row", "grid", "overlay"), default="row",
                    help="side by side (default), in a grid, or on top of each other")
    vw.add_argument("--color-by-distance", metavar="REF",
                    help="colour each input by its distance to the mesh or point cloud REF (error map)")
    vw.add_argument("--screenshot", metavar="OUT.png", help="render headless to this picture and exit")
    vw.add_argument("--size", type=_image_size, default=(800, 600), metavar="WxH",
                    help="screenshot size in pixels (default 800x600)")
    vw.add_argument("--azimuth", type=_finite_float, default=30.0, help="camera azimuth in degrees")
    vw.add_argument("--elevation", type=_finite_float, default=20.0, help="camera elevation in degrees")
    vw.add_argument("--up", choices=("z", "y"), default="z", help="vertical axis of the inputs")
    vw.add_argument("--resolution", type=_resolution, help="marching-cubes grid for --shape (default: the config's)")
    vw.add_argument("--renderer", choices=("auto", "pyrender", "open3d", "raycast"), default="auto",
                    help="headless renderer (auto: pyrender on OSMesa, else the ray caster)")
    _add_device(vw)
    vw.set_defaults(func=_view)

    sl = sub.add_parser("slice", help="picture of a shape's SDF on a plane, zero level drawn",
                        description="The SDF of a training shape on the plane AXIS = AT (normalised frame) as a "
                                    "diverging colour map with the zero level set drawn; for 2D runs the whole "
                                    "field.")
    sl.add_argument("--run", required=True, help="run folder")
    sl.add_argument("--shape", required=True, metavar="ID", help="training shape id or category/id")
    sl.add_argument("--axis", choices=("x", "y", "z"), default="z", help="normal of the plane (3D runs)")
    sl.add_argument("--at", type=_finite_float, default=0.0, help="position of the plane along AXIS, in [-1, 1]")
    sl.add_argument("--out", required=True, metavar="OUT.png", help="picture to write (.png .pdf .svg)")
    sl.add_argument("--resolution", type=_resolution, default=256, help="samples per side (default 256)")
    _add_device(sl)
    sl.set_defaults(func=_slice)

    pl = sub.add_parser("plot", help="training curves of one or more runs",
                        description="Loss per epoch and learning rates from RUN/metrics.jsonl, runs overlaid.")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    pl.add_argument("--out", required=True, metavar="OUT.png", help="picture to write (.png .pdf .svg)")
    pl.set_defaults(func=_plot)

    de = sub.add_parser("demo", help="the whole path on built-in procedural shapes",
                        description="Generate shapes, prep, train the small preset, scan a held-out shape, "
                                    "reconstruct it and print the chamfer distance.")
    de.add_argument("--out", default="demo_out", help="folder for everything the demo writes")
    de.add_argument("--minutes", type=_finite_float, default=3.0, help="training budget in minutes")
    _add_device(de)
    de.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    from data_prep.formats import DataError
    from deepsdf_ad.config import ConfigError

    try:
        return args.func(args) or 0
    except (UserError, DataError, ConfigError) as e:
        msg = str(e).replace("\n", " ")
        print(f"deepsdf-ad: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as e:
        print(f"deepsdf-ad: error: {e.filename or e}: file not found", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as e:
        print(f"deepsdf-ad: error: {e.filename or e}: permission denied", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("deepsdf-ad: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: one line, never a traceback unless asked for
        if os.environ.get("DEEPSDF_AD_DEBUG"):
            traceback.print_exc()
        msg = str(e).replace("\n", " ")[:300]
        print(f"deepsdf-ad: error: unexpected {type(e).__name__}: {msg} (set DEEPSDF_AD_DEBUG=1 for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
