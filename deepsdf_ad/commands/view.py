"""``deepsdf-ad view|slice|plot``: pictures of meshes, point clouds, SDF slices and training curves
(``viz``)."""

from __future__ import annotations

from deepsdf_ad.commands.common import (
    add_device,
    add_resolution,
    finite_float,
    image_size,
    not_inputs,
    positive_float,
)


def add_parsers(sub) -> None:
    _add_view(sub)
    _add_slice(sub)
    pl = sub.add_parser("plot", help="training curves of one or more runs",
                        description="Loss per epoch and learning rates from RUN/metrics.jsonl, runs "
                                    "overlaid.")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    pl.add_argument("--out", required=True, metavar="OUT.png", help="picture to write (.png .pdf .svg)")
    pl.set_defaults(func=run_plot)


def _add_view(sub) -> None:
    vw = sub.add_parser("view", help="open meshes and point clouds in the open3d viewer, or render a picture",
                        description="Show meshes and point clouds side by side, each labelled, in the open3d "
                                    "viewer (needs a display), or with --screenshot render the same view to "
                                    "a PNG headless (no display or GPU needed).")
    vw.add_argument("files", nargs="*", metavar="FILE", help="meshes or point clouds (.ply .obj .off .stl)")
    vw.add_argument("--run",
                    help="run folder whose training shapes --shape shows (meshed with marching cubes)")
    vw.add_argument("--shape", action="append", default=[], metavar="ID",
                    help="training shape id or category/id of --run (repeatable)")
    vw.add_argument("--layout", choices=("row", "grid", "overlay"), default="row",
                    help="side by side (default), in a grid, or on top of each other")
    vw.add_argument("--color-by-distance", metavar="REF",
                    help="colour each input by its distance to the mesh or point cloud REF (error map)")
    vw.add_argument("--screenshot", metavar="OUT.png", help="render headless to this picture and exit")
    vw.add_argument("--size", type=image_size, default=(800, 600), metavar="WxH",
                    help="screenshot size in pixels (default 800x600)")
    vw.add_argument("--azimuth", type=finite_float, default=30.0, help="camera azimuth in degrees")
    vw.add_argument("--elevation", type=finite_float, default=20.0, help="camera elevation in degrees")
    vw.add_argument("--up", choices=("z", "y"), default="z", help="vertical axis of the inputs")
    add_resolution(vw, help="marching-cubes grid for --shape (default: the config's)")
    vw.add_argument("--renderer", choices=("auto", "pyrender", "open3d", "raycast"), default="auto",
                    help="headless renderer (auto: pyrender on OSMesa, else the ray caster)")
    add_device(vw)
    vw.set_defaults(func=run_view)


def _add_slice(sub) -> None:
    sl = sub.add_parser("slice", help="picture of a shape's SDF on a plane, zero level drawn",
                        description="The SDF of a training shape on the plane AXIS = AT (normalised frame) "
                                    "as a diverging colour map with the zero level set drawn; for 2D runs "
                                    "the whole field.")
    sl.add_argument("--run", required=True, help="run folder")
    sl.add_argument("--shape", required=True, metavar="ID", help="training shape id or category/id")
    sl.add_argument("--axis", choices=("x", "y", "z"), default="z", help="normal of the plane (3D runs)")
    sl.add_argument("--at", type=finite_float, default=0.0,
                    help="position of the plane along AXIS, in [-1, 1]")
    sl.add_argument("--out", required=True, metavar="OUT.png", help="picture to write (.png .pdf .svg)")
    sl.add_argument("--vmax", type=positive_float, default=None,
                    help="colour range +/-VMAX, to compare slices on one scale (default: the slice's largest "
                         "|sdf|)")
    sl.add_argument("--truth", metavar="DATA",
                    help="slice the shape's ground truth in the data root DATA instead of the run's decoder "
                         "(the run gives the dimension and the shape's name)")
    add_resolution(sl, default=256, help="samples per side (default 256)")
    add_device(sl)
    sl.set_defaults(func=run_slice)


def run_view(args) -> int:
    from deepsdf_ad.viz.viewer import view

    not_inputs(args.screenshot, files=[*args.files, args.color_by_distance], runs=[args.run],
               flag="--screenshot")
    info = view(args.files, run=args.run, shapes=args.shape, layout=args.layout,
                color_by_distance_ref=args.color_by_distance, screenshot=args.screenshot, size=args.size,
                azimuth=args.azimuth, elevation=args.elevation, up=args.up, resolution=args.resolution,
                renderer=args.renderer, device=args.device)
    if "distance_max" in info:
        means = ", ".join(f"{n} {m:.4g}" for n, m in zip(info["inputs"], info["distance_mean"], strict=True))
        print(f"view: distance to {args.color_by_distance}: mean {means}; colour bar 0 to "
              f"{info['distance_max']:.4g}")
    if "screenshot" in info:
        print(f"view: {len(info['inputs'])} input(s) -> {info['screenshot']}")
    return 0


def run_slice(args) -> int:
    from deepsdf_ad.viz.slices import slice_run, slice_truth

    not_inputs(args.out, runs=[args.run])
    if args.truth is not None:
        s = slice_truth(args.run, args.shape, args.truth, args.out, axis=args.axis, at=args.at,
                        resolution=args.resolution, vmax=args.vmax)
    else:
        s = slice_run(args.run, args.shape, args.out, axis=args.axis, at=args.at, resolution=args.resolution,
                      device=args.device, vmax=args.vmax)
    print(f"slice: sdf in [{s.values.min():.4f}, {s.values.max():.4f}] on "
          f"{s.axis_names[0]}-{s.axis_names[1]} -> {s.path}")
    return 0


def run_plot(args) -> int:
    from deepsdf_ad.viz.plots import plot_runs

    not_inputs(args.out, runs=args.runs)
    out = plot_runs(args.runs, args.out)
    print(f"plot: {len(args.runs)} run(s) -> {out}")
    return 0
