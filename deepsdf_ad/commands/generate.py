"""``deepsdf-ad sample|interpolate``: new shapes from a trained run's code space."""

from __future__ import annotations

import math
import os
from pathlib import Path

from deepsdf_ad.commands.common import add_device, add_quiet, add_resolution, not_inputs, positive_int, seed

CODES_JSON = "codes.json"


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
    not_inputs(args.out, runs=[args.run])
    info = sample_shapes(args.run, args.n, args.out, seed=args.seed, resolution=args.resolution,
                         device=args.device, progress=not args.quiet)
    print(f"sample: {len(info['files'])} file(s) for {info['shapes']} shapes -> {args.out}")
    return 0


def run_interpolate(args) -> int:
    not_inputs(args.out, runs=[args.run])
    info = interpolate_shapes(args.run, args.a, args.b, args.steps, args.out, resolution=args.resolution,
                              device=args.device, progress=not args.quiet)
    print(f"interpolate: {info['a']} -> {info['b']} in {info['shapes']} steps, {len(info['files'])} file(s) "
          f"-> {args.out}")
    return 0


def write_shapes(model, cfg, codes, out_dir: Path, stem: str, device, resolution: int, columns: int,
                 progress: bool = True) -> dict:
    """Decode each code (:func:`deepsdf_ad.generate.decode_shapes`): 2D runs -> one grid PNG ``<stem>.png``;
    3D runs -> ``<stem>_NNN.ply`` meshes. A 3D code whose field has no zero crossing is skipped with a note
    (reported under ``skipped``)."""
    from deepsdf_ad.data_prep.formats import save_mesh, save_png
    from deepsdf_ad.data_prep.log import note
    from deepsdf_ad.generate import decode_shapes
    from deepsdf_ad.meshing import picture_grid

    shapes = decode_shapes(model, cfg, codes, device, resolution, stem, progress)
    files, skipped = [], []
    if cfg.dim == 2:
        path = out_dir / f"{stem}.png"
        save_png(path, picture_grid(shapes, columns))
        return {"files": [str(path)], "skipped": skipped}
    for k, mesh in enumerate(shapes):
        if isinstance(mesh, Exception):
            skipped.append({"index": k, "reason": str(mesh)})
            note(f"{stem} {k}: {mesh}")
            continue
        path = out_dir / f"{stem}_{k:03d}.ply"
        save_mesh(path, mesh)
        files.append(str(path))
    return {"files": files, "skipped": skipped}


def _load(run_path: str | os.PathLike, device: str):
    from deepsdf_ad.device import resolve_device
    from deepsdf_ad.runs import Run, load_trained

    dev = resolve_device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    return run, cfg, model, dev


def sample_shapes(run_path: str | os.PathLike, n: int, out_dir: str | os.PathLike, seed: int = 0,
                  resolution: int | None = None, device: str = "auto", progress: bool = True) -> dict:
    """``deepsdf-ad sample``: ``n`` new shapes from codes drawn from a Gaussian fitted to the training codes.

    Writes ``DIR/samples.png`` (2D runs: a grid of fields with their contours) or ``DIR/samples_NNN.ply``
    (3D runs), and ``DIR/codes.json`` with the codes.
    """
    import numpy as np

    from deepsdf_ad.data_prep.formats import write_json
    from deepsdf_ad.generate import sample_codes

    run, cfg, model, dev = _load(run_path, device)
    out_dir = Path(out_dir)
    codes = sample_codes(model.latent.all_codes().cpu(), n, np.random.default_rng(seed))
    info = write_shapes(model, cfg, codes, out_dir, "samples", dev, resolution or cfg.mesh.resolution,
                        columns=math.ceil(math.sqrt(n)), progress=progress)
    write_json(out_dir / CODES_JSON, {"run": str(run.path), "seed": seed, "codes": codes.tolist()})
    return {**info, "shapes": n}


def interpolate_shapes(run_path: str | os.PathLike, a: str, b: str, steps: int, out_dir: str | os.PathLike,
                       resolution: int | None = None, device: str = "auto", progress: bool = True) -> dict:
    """``deepsdf-ad interpolate``: shapes on the line between the codes of training shapes ``a`` and ``b``.

    Writes ``DIR/interpolation.png`` (2D runs: one row, ``a`` on the left) or ``DIR/interpolation_NNN.ply``
    (3D runs), and ``DIR/codes.json``.
    """
    from deepsdf_ad.data_prep.formats import DataError, write_json
    from deepsdf_ad.generate import interpolate_codes

    if steps < 2:
        raise DataError(f"--steps {steps}: need at least 2 (the two ends)")
    run, cfg, model, dev = _load(run_path, device)
    out_dir = Path(out_dir)
    table = model.latent.all_codes().cpu()
    ia, ib = run.shape_index(a), run.shape_index(b)
    codes = interpolate_codes(table[ia], table[ib], steps)
    info = write_shapes(model, cfg, codes, out_dir, "interpolation", dev, resolution or cfg.mesh.resolution,
                        columns=steps, progress=progress)
    keys = run.shapes()["keys"]
    write_json(out_dir / CODES_JSON, {"run": str(run.path), "a": keys[ia], "b": keys[ib],
                                      "codes": codes.tolist()})
    return {**info, "shapes": steps, "a": keys[ia], "b": keys[ib]}
