"""``deepsdf-ad reconstruct``: a partial scan and a trained run -> a completed mesh."""

from __future__ import annotations

from deepsdf_ad import UP_CHOICES
from deepsdf_ad.commands.common import (
    MESH_SUFFIXES,
    UserError,
    add_device,
    add_meshing,
    add_quiet,
    add_resolution,
    field_default,
    intrinsics,
    not_inputs,
    positive_float,
    positive_int,
    seed,
    suffix,
)
from deepsdf_ad.data_prep.params import DepthCamera

DEPTH_SCALE = field_default(DepthCamera, "depth_scale")


def add_parsers(sub) -> None:
    rc = sub.add_parser("reconstruct", help="complete a shape from a partial scan",
                        description="Find a latent code that explains PARTIAL (surface points, and free "
                                    "space along the camera rays when known), then mesh it in PARTIAL's "
                                    "frame. Instead of PARTIAL, --depth takes a depth image (the mesh is "
                                    "then in the camera's frame: x right, y down, z forward).")
    rc.add_argument("partial", metavar="PARTIAL", nargs="?",
                    help="partial point cloud (.ply, .pcd, .xyz/.txt, .npy, .npz; from 'deepsdf-ad scan' or "
                         "a sensor; its camera from a .json sidecar or the PLY header); for a 2D run a PNG "
                         "of a partly masked digit (alpha 0 = unknown) or 2D contour points (.npy/.txt)")
    rc.add_argument("--depth", metavar="DEPTH.png",
                    help="instead of PARTIAL: a 16-bit depth PNG as RGB-D cameras write it (0 = no reading); "
                         "needs --intrinsics")
    rc.add_argument("--intrinsics", type=intrinsics, metavar="FX,FY,CX,CY",
                    help="the depth camera's pinhole intrinsics in pixels (OpenCV/Open3D convention)")
    rc.add_argument("--depth-scale", type=positive_float, metavar="UNITS",
                    help=f"raw depth units per metre (default: {DEPTH_SCALE:g}, millimetres)")
    rc.add_argument("--run", required=True, help="trained run folder")
    rc.add_argument("--out", required=True, help="output mesh (.png for a 2D run)")
    add_resolution(rc, help="marching-cubes grid points per axis")
    rc.add_argument("--iterations", type=positive_int, help="optimisation steps (default: the config's)")
    rc.add_argument("--restarts", type=positive_int,
                    help="starts optimised side by side; the one with the lowest loss goes on (default: the "
                         "config's reconstruct.restarts)")
    rc.add_argument("--norm", help="normalisation .npz (offset, scale) of the object, if not in the sidecar")
    rc.add_argument("--seed", type=seed, default=0, help="random seed")
    rc.add_argument("--mode", choices=("optimise", "encode", "encode+refine"),
                    help="optimise the code (default for autodecoder runs), encode the points in one pass "
                         "(default for autoencoder runs), or encode then optimise from there")
    frame = rc.add_argument_group("scans in an unknown frame (no sidecar normalisation, no --norm)",
                                  "the capture is cleaned and its pose (up axis, turn about it, scale, "
                                  "shift) is searched with the code; OUT.json records what was found and "
                                  "dropped")
    frame.add_argument("--up", choices=UP_CHOICES,
                       help="the input's axis that points up (default: the floor's normal when a floor is "
                            "found, else all six are tried)")
    frame.add_argument("--keep-floor", action="store_true",
                       help="keep the plane found under the object (it still gives the up axis)")
    frame.add_argument("--crop", type=positive_float, metavar="R",
                       help="drop points farther than R (input units) from the object's centre")
    frame.add_argument("--no-pose-search", action="store_true",
                       help="normalise by the points' bounding box in their own orientation, without "
                            "cleaning (the behaviour before the pose search)")
    add_meshing(rc)
    add_device(rc)
    add_quiet(rc, help="no progress bars")
    rc.set_defaults(func=run_reconstruct)


def depth_camera(args) -> DepthCamera | None:
    """The depth camera of ``--depth``/``--intrinsics``/``--depth-scale`` (None without ``--depth``); exactly
    one of PARTIAL and ``--depth``."""
    if (args.partial is None) == (args.depth is None):
        raise UserError("give one input, PARTIAL (a point cloud) or --depth DEPTH.png (a depth image); got "
                        + ("both" if args.partial else "neither"))
    if args.depth is None:
        if args.intrinsics is not None or args.depth_scale is not None:
            raise UserError("--intrinsics and --depth-scale describe a depth image: they go with --depth "
                            "DEPTH.png")
        return None
    if args.intrinsics is None:
        raise UserError(f"{args.depth}: --depth needs the camera's --intrinsics FX,FY,CX,CY (pixels)")
    scale = DEPTH_SCALE if args.depth_scale is None else args.depth_scale
    return DepthCamera(*args.intrinsics, depth_scale=scale)


def run_reconstruct(args) -> int:
    camera = depth_camera(args)  # usage errors before the heavy imports
    from deepsdf_ad.commands.reconstruction import reconstruct_scan

    partial = args.partial if camera is None else args.depth
    not_inputs(args.out, files=[partial, args.norm], runs=[args.run])
    suffix(args.out, (*MESH_SUFFIXES, ".png"))
    info = reconstruct_scan(args.run, partial, args.out, resolution=args.resolution,
                            iterations=args.iterations, device=args.device, norm=args.norm, seed=args.seed,
                            mode=args.mode, method=args.method, precision=args.precision,
                            restarts=args.restarts, up=args.up, keep_floor=args.keep_floor, crop=args.crop,
                            pose_search=not args.no_pose_search, depth_camera=camera, progress=not args.quiet)
    loss = "" if info["final_loss"] is None else f", final loss {info['final_loss']:.5f}"
    print(f"reconstruct: {info['points']} points, mode {info['mode']}{loss}, "
          f"normalisation {info['normalization']} -> {info['out']}")
    return 0
