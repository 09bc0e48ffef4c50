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


# ---- commands --------------------------------------------------------------------------------
def _prep_meshes(args) -> int:
    from data_prep.meshes import SamplingConfig
    from data_prep.pipeline import PrepConfig, prep_meshes

    cfg = PrepConfig(SamplingConfig(samples=args.samples), test_fraction=args.test_fraction, seed=args.seed)
    manifest = prep_meshes(args.src, args.out, cfg, workers=args.workers, progress=not args.quiet)
    s = manifest["summary"]
    print(f"prep: {s['ok']} of {s['meshes']} meshes ok, {s['failed']} failed -> {args.out}")
    for r in manifest["meshes"]:
        if r["status"] != "ok":
            print(f"  failed: {r['reason']}")
    if s["ok"] == 0:
        raise UserError(f"{args.src}: no mesh could be prepared (see {Path(args.out) / 'manifest.json'})")
    return 0


def _train(args) -> int:
    from deepsdf_ad.config import load_config
    from deepsdf_ad.train import train

    cfg = load_config(args.config, args.set)
    run = train(cfg, args.data, args.out, epochs=args.epochs, device=args.device, split_file=args.split,
                progress=not args.quiet)
    rows = run.metrics()
    last = rows[-1] if rows else {}
    print(f"train: {len(rows)} epochs, final loss {last.get('loss', float('nan')):.6f} -> {run.path}")
    return 0


def _mesh(args) -> int:
    from deepsdf_ad.meshing import mesh_training_shape

    info = mesh_training_shape(args.run, args.shape, args.out, resolution=args.resolution, device=args.device)
    print(f"mesh: {info['vertices']} vertices, {info['faces']} faces -> {args.out}")
    return 0


def _scan(args) -> int:
    import numpy as np

    from data_prep.meshes import load_mesh, normalization
    from data_prep.scans import CameraConfig, save_scan, scan_mesh

    mesh = load_mesh(args.mesh)
    cam = CameraConfig(azimuth=args.azimuth, elevation=args.elevation, resolution=args.resolution, fov=args.fov,
                       distance=args.distance, noise=args.noise, up=args.up)
    scan = scan_mesh(mesh, cam, np.random.default_rng(args.seed))
    save_scan(args.out, scan, normalization(mesh))
    print(f"scan: {len(scan.points)} points seen from {np.round(scan.camera, 4).tolist()} -> {args.out}")
    return 0


def _reconstruct(args) -> int:
    from deepsdf_ad.reconstruct import reconstruct_file

    info = reconstruct_file(args.run, args.partial, args.out, resolution=args.resolution,
                            iterations=args.iterations, device=args.device, norm=args.norm, seed=args.seed)
    print(f"reconstruct: {info['points']} points, final loss {info['final_loss']:.5f}, "
          f"normalisation {info['normalization']} -> {info['out']}")
    return 0


def _view(args) -> int:
    from viz.viewer import view_files

    view_files(args.files)
    return 0


def _demo(args) -> int:
    from deepsdf_ad.demo import run_demo

    result = run_demo(args.out, minutes=args.minutes, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


# ---- parser ----------------------------------------------------------------------------------
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
    pm.add_argument("--seed", type=int, default=0, help="random seed")
    pm.add_argument("--quiet", action="store_true", help="no progress bar")
    pm.set_defaults(func=_prep_meshes)

    tr = sub.add_parser("train", help="train a model (resumes if RUN exists)",
                        description="Train on DATA's train split into RUN; running it again resumes.")
    tr.add_argument("--config", required=True, help="YAML preset, e.g. configs/shapes_small.yaml")
    tr.add_argument("--data", required=True, metavar="DATA", help="data folder (ours or DeepSDF's)")
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder")
    tr.add_argument("--epochs", type=_positive_int, help="override the config's epoch count")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set train.shapes_per_batch=16 (repeatable)")
    tr.add_argument("--split", help="split JSON to train on (default DATA/splits/train.json)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_device(tr)
    tr.set_defaults(func=_train)

    me = sub.add_parser("mesh", help="extract the mesh of a training shape",
                        description="Mesh a training shape of RUN (normalised frame) with marching cubes.")
    me.add_argument("--run", required=True, help="run folder")
    me.add_argument("--shape", required=True, metavar="ID", help="shape id or category/id")
    me.add_argument("--out", required=True, help="output mesh (.ply, .obj, .off, .stl)")
    me.add_argument("--resolution", type=_resolution, help="grid points per axis (default: the config's)")
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
    sc.add_argument("--seed", type=int, default=0, help="seed of the depth noise")
    sc.set_defaults(func=_scan)

    rc = sub.add_parser("reconstruct", help="complete a shape from a partial scan",
                        description="Find a latent code that explains PARTIAL (surface points, and free space "
                                    "along the camera rays when known), then mesh it in PARTIAL's frame.")
    rc.add_argument("partial", metavar="PARTIAL.ply", help="partial point cloud (from 'deepsdf-ad scan' or a sensor)")
    rc.add_argument("--run", required=True, help="trained run folder")
    rc.add_argument("--out", required=True, help="output mesh")
    rc.add_argument("--resolution", type=_resolution, help="marching-cubes grid points per axis")
    rc.add_argument("--iterations", type=_positive_int, help="optimisation steps (default: the config's)")
    rc.add_argument("--norm", help="normalisation .npz (offset, scale) of the object, if not in the sidecar")
    rc.add_argument("--seed", type=int, default=0, help="random seed")
    _add_device(rc)
    rc.set_defaults(func=_reconstruct)

    vw = sub.add_parser("view", help="open meshes and point clouds in the open3d viewer")
    vw.add_argument("files", nargs="+", metavar="FILE", help="meshes or point clouds")
    vw.set_defaults(func=_view)

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
    args = parser.parse_args(argv)
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
