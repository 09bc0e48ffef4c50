"""``deepsdf-ad mesh``: a training shape of a run -> a mesh file (a field picture for a 2D run)."""

from __future__ import annotations

from deepsdf_ad.commands.common import (
    MESH_SUFFIXES,
    add_device,
    add_meshing,
    add_quiet,
    add_resolution,
    not_inputs,
    suffix,
)


def add_parsers(sub) -> None:
    me = sub.add_parser("mesh", help="extract the mesh of a training shape",
                        description="Mesh a training shape of RUN (normalised frame) with marching cubes; for "
                                    "a 2D run, write a PNG of the field with its zero contour (marching squares).")
    me.add_argument("--run", required=True, help="run folder")
    me.add_argument("--shape", required=True, metavar="ID", help="shape id or category/id")
    me.add_argument("--out", required=True, help="output mesh (.ply, .obj, .off, .stl); .png for a 2D run")
    add_resolution(me)
    add_meshing(me)
    add_device(me)
    add_quiet(me)
    me.set_defaults(func=run_mesh)


def run_mesh(args) -> int:
    from deepsdf_ad.meshing import mesh_training_shape

    not_inputs(args.out, runs=[args.run])
    suffix(args.out, (*MESH_SUFFIXES, ".png"))
    info = mesh_training_shape(args.run, args.shape, args.out, resolution=args.resolution, device=args.device,
                               method=args.method, precision=args.precision or "fp32", progress=not args.quiet)
    if "contours" in info:  # a 2D run: a picture of the field
        print(f"mesh: field picture with {info['contours']} contours ({info['contour_points']} points) -> {args.out}")
    else:
        print(f"mesh: {info['vertices']} vertices, {info['faces']} faces -> {args.out}")
    return 0
