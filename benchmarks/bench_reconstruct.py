"""Reconstruction benchmark: our latent-optimisation schedule vs DeepSDF's, same decoder, same shapes.

DeepSDF's: 800 iterations, lr 5e-3 dropped x0.1 at 400, 8,000 samples per step, code from N(0, 0.01^2).
Ours: the ``shapes_small`` preset's ``reconstruct`` config (the run's own with ``--run``): start from the best
of the mean, zero and training codes, half a cosine from 2e-2, 300 x 4,000. Both fit the held-out shapes' SDF
samples (DeepSDF's evaluation protocol); quality is the chamfer distance (x1e3, DeepSDF's convention) of the
final mesh (128^3) to the true mesh. Prints seconds and chamfer per shape and their ratios, medians over the
shapes.

    python benchmarks/bench_reconstruct.py                 # trains a small run on procedural shapes first
    python benchmarks/bench_reconstruct.py --run RUN --data DATA --meshes MESH_DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepsdf_ad.config import load_config
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.meshes import SamplingConfig, load_mesh, normalized_mesh
from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes
from deepsdf_ad.data_prep.shapes import write_family
from deepsdf_ad.losses import loss_clamp
from deepsdf_ad.meshing import mesh_sdf, model_sdf
from deepsdf_ad.metrics import chamfer_squared, surface_points
from deepsdf_ad.reconstruct import (
    mean_training_code,
    observations_from_samples,
    optimise_codes,
    start_candidates,
)
from deepsdf_ad.runs import (
    Run,
    load_trained,
)
from deepsdf_ad.train import train


def deepsdf_schedule(rc):
    return dataclasses.replace(rc, iterations=800, lr=5e-3, lr_drop_at=0.5, lr_drop_factor=0.1, samples=8000,
                               init="random", init_std=0.01, samples_start=0, patience=0, precision="fp32",
                               schedule="step", restarts=1)


def with_settings(rc, pairs: list[str]):
    """``rc`` with ``KEY=VALUE`` pairs applied (each value converted to the field's type)."""
    return dataclasses.replace(rc,
                               **{k: type(getattr(rc, k))(v) for k, v in (p.split("=", 1) for p in pairs)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/bench_reconstruct")
    ap.add_argument("--run")
    ap.add_argument("--data")
    ap.add_argument("--meshes", help="folder of the original meshes (category/id.*) for the chamfer")
    ap.add_argument("--train-minutes", type=float, default=6.0)
    ap.add_argument("--shapes", type=int, default=6, help="held-out shapes reconstructed")
    ap.add_argument("--set", action="append", default=[],
                    help="override our reconstruct config, e.g. patience=40")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,KEY=VALUE",
                    help="also run this variant of our schedule (repeatable; measured in the same run)")
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(args.work)
    if args.run is None:
        meshes, data, run_path = work / "meshes", work / "data", work / "run"
        if not meshes.is_dir():
            write_family(meshes, per_family=12, seed=0)
        prep_meshes(meshes, data, PrepConfig(SamplingConfig(samples=100_000), test_fraction=0.2),
                    progress=False)
        if not (run_path / "latent_codes.safetensors").is_file():
            train(load_config("shapes_small"), data, run_path, device="cpu", progress=False,
                  max_seconds=args.train_minutes * 60)
    else:
        meshes, data, run_path = Path(args.meshes), Path(args.data), Path(args.run)
    dev = torch.device("cpu")
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    # ours: the preset's code search as it is now (a reused run keeps the config it was trained with)
    base = cfg.reconstruct if args.run is not None else load_config("shapes_small").reconstruct
    ours = with_settings(base, args.set)
    theirs = deepsdf_schedule(cfg.reconstruct)
    schedules = [("deepsdf", theirs), ("ours", ours)]
    for v in args.variant:
        vname, _, sets = v.partition(":")
        schedules.append((vname, with_settings(ours, [kv for kv in sets.split(",") if kv])))
    mean = mean_training_code(run)
    candidates = start_candidates(run)
    refs = formats.DataRoot(data).shapes("test")[: args.shapes]
    print(f"run {run_path} ({len(run.metrics())} epochs); {len(refs)} held-out shapes; ours: iterations "
          f"{ours.iterations}, lr {ours.lr} ({ours.schedule}), samples {ours.samples_start or ours.samples}->"
          f"{ours.samples}, patience {ours.patience}, init {ours.init}, precision {ours.precision}")
    rows = []
    for ref in refs:
        gt_file = next(p for p in (meshes / ref.category).iterdir() if p.stem == ref.id)
        gt, _, _ = normalized_mesh(load_mesh(gt_file))
        gt_pts = surface_points(gt)
        obs = observations_from_samples(np.concatenate(formats.load_sdf_samples(ref.sdf)))
        res = {}
        for name, rc in schedules:
            init = mean.reshape(1, -1) if rc.init == "mean" and mean is not None else None
            t0 = time.perf_counter()
            code, losses = optimise_codes(model, [obs], rc, loss_clamp(cfg), dev, init=init, seed=0,
                                          candidates=candidates)
            seconds = time.perf_counter() - t0
            try:
                mesh = mesh_sdf(model_sdf(model, code[0], dev), args.resolution)
                cd = chamfer_squared(surface_points(mesh), gt_pts) * 1e3
            except Exception as e:  # an empty field: no mesh
                print(f"  {ref.key} {name}: no mesh ({e})")
                cd = float("nan")
            res[name] = (seconds, cd, len(losses))
        rows.append(res)
        d = res["deepsdf"]
        print(f"  {ref.key}: DeepSDF {d[0]:.1f} s ({d[2]} it) chamfer {d[1]:.3f}", flush=True)
        for name, _ in schedules[1:]:
            o = res[name]
            print(f"    {name}: {o[0]:.1f} s ({o[2]} it) chamfer {o[1]:.3f} | time x{o[0] / d[0]:.3f}, "
                  f"chamfer x{o[1] / d[1]:.3f}", flush=True)
    med = {k: (statistics.median(r[k][0] for r in rows), statistics.median(r[k][1] for r in rows))
           for k, _ in schedules}
    print(f"\nmedian over {len(rows)} shapes: DeepSDF {med['deepsdf'][0]:.1f} s, chamfer "
          f"{med['deepsdf'][1]:.3f}")
    for name, _ in schedules[1:]:
        print(f"  {name}: {med[name][0]:.1f} s, chamfer {med[name][1]:.3f}; time ratio "
              f"{med[name][0] / med['deepsdf'][0]:.3f} (target <= 0.25), chamfer ratio "
              f"{med[name][1] / med['deepsdf'][1]:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
