"""``deepsdf-ad mesh``: a training shape of a run -> a mesh file (a field picture for a 2D run)."""

from __future__ import annotations

from pathlib import Path

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
                        description="Mesh a training shape of RUN (normalised frame) with marching cubes; "
                                    "for a 2D run, write a PNG of the field with its zero contour (marching "
                                    "squares).")
    me.add_argument("--run", required=True, help="run folder")
    me.add_argument("--shape", required=True, metavar="ID", help="shape id or category/id")
    me.add_argument("--out", required=True, help="output mesh (.ply, .obj, .off, .stl); .png for a 2D run")
    add_resolution(me)
    add_meshing(me)
    add_device(me)
    add_quiet(me)
    me.set_defaults(func=run_mesh)


def run_mesh(args) -> int:
    not_inputs(args.out, runs=[args.run])
    suffix(args.out, (*MESH_SUFFIXES, ".png"))
    info = mesh_training_shape(args.run, args.shape, args.out, resolution=args.resolution, device=args.device,
                               method=args.method, precision=args.precision or "fp32",
                               progress=not args.quiet)
    if "contours" in info:  # a 2D run: a picture of the field
        print(f"mesh: field picture with {info['contours']} contours ({info['contour_points']} points) "
              f"-> {args.out}")
    else:
        print(f"mesh: {info['vertices']} vertices, {info['faces']} faces -> {args.out}")
    return 0


def mesh_training_shape(run_path, shape: str, out, resolution: int | None = None, device: str = "auto",
                        method: str = "adaptive", precision: str = "fp32", progress: bool = False) -> dict:
    """``deepsdf-ad mesh``: the mesh of training shape ``shape`` of a run, in the normalised frame, written to
    ``out`` (for a 2D run: a PNG of the field with its contour). ``progress``: a progress bar for the
    meshing."""
    from deepsdf_ad.data_prep.formats import save_mesh
    from deepsdf_ad.device import resolve_device
    from deepsdf_ad.meshing import field_kind, mesh_sdf, model_sdf
    from deepsdf_ad.runs import Run, load_trained

    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    index = run.shape_index(shape)
    code = model.latent.all_codes()[index]
    fn = model_sdf(model, code, dev, cfg.mesh.batch_points, precision=precision)
    res = resolution or cfg.mesh.resolution
    if cfg.dim == 2:
        return write_field_picture(fn, field_kind(cfg), res, out)
    mesh = mesh_sdf(fn, res, method=method, progress=progress)
    save_mesh(out, mesh)
    return {"out": str(Path(out)), "vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))}


def write_field_picture(fn, kind: str, resolution: int, out) -> dict:
    """Write the picture of a 2D field ``fn`` (points (M, 2) -> (M,)) with its contour
    (:func:`deepsdf_ad.meshing.field_image`) to ``out`` (a .png); returns what the commands report of it."""
    from deepsdf_ad.data_prep.formats import DataError, save_png
    from deepsdf_ad.meshing import field_image

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DataError(f"{out}: a 2D run writes a picture; give a .png output")
    picture, lines = field_image(fn, kind, resolution)
    save_png(out, picture)
    return {"out": str(out), "contours": len(lines), "contour_points": int(sum(len(c) for c in lines))}
