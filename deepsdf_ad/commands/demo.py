"""``deepsdf-ad demo``: the whole path on built-in procedural shapes (:mod:`deepsdf_ad.demo`)."""

from __future__ import annotations

import json

from deepsdf_ad.commands.common import add_device, finite_float


def add_parsers(sub) -> None:
    de = sub.add_parser("demo", help="the whole path on built-in procedural shapes",
                        description="Generate shapes, prep, train the small preset, scan a held-out shape, "
                                    "reconstruct it and print the chamfer distance.")
    de.add_argument("--out", default="demo_out", help="folder for everything the demo writes")
    de.add_argument("--minutes", type=finite_float, default=3.0, help="training budget in minutes")
    de.add_argument("--quick", action="store_true",
                    help="the same path at a few shapes, epochs and steps: checks an installation in seconds "
                         "(the shape it finds is rough)")
    add_device(de)
    de.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from deepsdf_ad import demo

    result = demo.run_demo(args.out, minutes=args.minutes, device=args.device, quick=args.quick)
    print(json.dumps(result, indent=2))
    return 0
