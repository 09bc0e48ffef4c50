"""``deepsdf-ad sample|interpolate``: new shapes from a trained run's code space."""

from __future__ import annotations

from deepsdf_ad.commands.common import add_device, add_quiet, add_resolution, not_inputs, positive_int, seed


def add_parsers(sub) -> None:
    sa = sub.add_parser("sample", help="new shapes from codes drawn from the training codes' Gaussian",
                        description="Fit a Gaussian to RUN's training codes, draw K codes and decode them: a "
                                    "grid PNG for a 2D run, meshes for a 3D run.")
    sa.add_argument("--run", required=True, help="trained run folder")
    sa.add_argument("--n", type=positive_int, default=16, metavar="K", help="shapes to draw (default 16)")
    sa.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_resolution(sa)
    sa.add_argument("--seed", type=seed, default=0, help="random seed")
    add_quiet(sa)
    add_device(sa)
    sa.set_defaults(func=run_sample)

    ip = sub.add_parser("interpolate", help="shapes between the codes of two training shapes",
                        description="Decode codes on the line between training shapes A and B: a row PNG for "
                                    "a 2D run, meshes for a 3D run.")
    ip.add_argument("--run", required=True, help="trained run folder")
    ip.add_argument("--a", required=True, metavar="ID", help="first training shape (id or category/id)")
    ip.add_argument("--b", required=True, metavar="ID", help="second training shape")
    ip.add_argument("--steps", type=positive_int, default=8, help="shapes including both ends (default 8)")
    ip.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_resolution(ip)
    add_quiet(ip)
    add_device(ip)
    ip.set_defaults(func=run_interpolate)


def run_sample(args) -> int:
    from deepsdf_ad.generate import sample_shapes

    not_inputs(args.out, runs=[args.run])
    info = sample_shapes(args.run, args.n, args.out, seed=args.seed, resolution=args.resolution,
                         device=args.device, progress=not args.quiet)
    print(f"sample: {len(info['files'])} file(s) for {info['shapes']} shapes -> {args.out}")
    return 0


def run_interpolate(args) -> int:
    from deepsdf_ad.generate import interpolate_shapes

    not_inputs(args.out, runs=[args.run])
    info = interpolate_shapes(args.run, args.a, args.b, args.steps, args.out, resolution=args.resolution,
                              device=args.device, progress=not args.quiet)
    print(f"interpolate: {info['a']} -> {info['b']} in {info['shapes']} steps, {len(info['files'])} file(s) "
          f"-> {args.out}")
    return 0
