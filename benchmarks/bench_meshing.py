"""Meshing benchmark: dense grid (DeepSDF's way: every grid point) vs coarse-to-fine, in one run.

For each preset decoder (``shapes_small`` 8x128 and ``deepsdf_chairs`` 8x512), fitted for a few hundred
steps to a procedural chair so its zero set is a real shape (or the decoder of ``--run``), and each
resolution: decoder queries, seconds, their ratios, and the distance of each mesh's vertices to the other
mesh's surface (the two must agree). Also the bf16-autocast inference error against fp32.

    python benchmarks/bench_meshing.py                 # 128^3 and 256^3, both presets
    python benchmarks/bench_meshing.py --quick         # 96^3 only, small preset (a CI-sized check)
    python benchmarks/bench_meshing.py --run RUN --shapes 3 --resolutions 256   # a trained run's first shapes

Dense 256^3 with the 8x512 decoder takes about 9 minutes on 2 cores; ``--skip-dense-above N`` estimates the
dense time for resolutions above N from the measured dense throughput instead (stated in the output).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepsdf_ad.config import find_preset, load_config
from deepsdf_ad.data_prep.meshes import SamplingConfig, SignedDistance, normalized_mesh, sample_query_points
from deepsdf_ad.data_prep.shapes import chair
from deepsdf_ad.losses import sdf_loss
from deepsdf_ad.meshing import adaptive_grid, evaluate_grid, marching_cubes, model_sdf
from deepsdf_ad.models import build_model

PRESETS = {"shapes_small (8x128)": find_preset("shapes_small"),
           "deepsdf_chairs (8x512)": find_preset("deepsdf_chairs")}


def fitted_decoder(preset: Path, steps: int, seed: int = 0):
    """The preset's model (dropout off) fitted to one procedural chair for ``steps`` Adam steps."""
    torch.manual_seed(seed)
    cfg = load_config(preset, ["model.decoder.dropout=0.0"])
    model = build_model(3, cfg.model.decoder, cfg.model.latent, 1)
    mesh, _, _ = normalized_mesh(chair(np.random.default_rng(seed)))
    q = sample_query_points(mesh, SamplingConfig(samples=200_000), np.random.default_rng(seed))
    sdf = SignedDistance(mesh)(q)
    pts, target = torch.from_numpy(q).float(), torch.from_numpy(sdf).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    index = {"index": torch.zeros(1, dtype=torch.long)}
    for _ in range(steps):
        i = torch.randint(len(pts), (4096,), generator=gen)
        loss = sdf_loss(model.decode(model.latent.codes(index), pts[i][None]), target[i][None], 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model, model.latent.codes(index)[0].detach(), float(loss.detach())


def decoders(args):
    """(label, model, code) to mesh: each preset's decoder fitted to a procedural chair, or a run's shapes."""
    if args.run:
        from deepsdf_ad.runs import Run, load_trained

        run = Run(args.run)
        _, model = load_trained(run, torch.device("cpu"))
        keys = run.shapes()["keys"]
        codes = model.latent.all_codes()
        for i in range(min(args.shapes, len(keys))):
            print(f"\n{run.path}: training shape {keys[i]} ({len(run.metrics())} epochs)")
            yield f"{Path(args.run).name}: {keys[i]}", model, codes[i]
        return
    for name in args.presets:
        t0 = time.perf_counter()
        model, code, loss = fitted_decoder(PRESETS[name], args.fit_steps)
        print(f"\n{name}: fitted to a procedural chair in {time.perf_counter() - t0:.0f} s (loss {loss:.4f})")
        yield name, model, code


def vertex_to_surface(a, b) -> np.ndarray:
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(b.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(b.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(a.vertices, np.float32))).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--fit-steps", type=int, default=1000,
                    help="Adam steps fitting each decoder to the chair")
    ap.add_argument("--skip-dense-above", type=int, default=10_000,
                    help="estimate (not run) dense meshing above this resolution")
    ap.add_argument("--quick", action="store_true", help="96^3, small preset, 100 fitting steps")
    ap.add_argument("--run",
                    help="measure a trained run's decoder on its training shapes instead of the presets")
    ap.add_argument("--shapes", type=int, default=3, help="with --run: its first N training shapes")
    args = ap.parse_args(argv)
    if args.quick:
        args.resolutions, args.presets, args.fit_steps = [96], [next(iter(PRESETS))], 100
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dev = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    rows = []
    for name, model, code in decoders(args):
        # measured dense queries/s of this decoder, for the estimates above --skip-dense-above
        dense_rate = None
        for res in args.resolutions:
            fn = model_sdf(model, code, dev)
            t0 = time.perf_counter()
            values, stats = adaptive_grid(fn, res)
            fine = marching_cubes(values)
            t_fine = time.perf_counter() - t0
            if res <= args.skip_dense_above:
                fn_d = model_sdf(model, code, dev)
                t0 = time.perf_counter()
                dense = marching_cubes(evaluate_grid(fn_d, res, 3))
                t_dense, measured = time.perf_counter() - t0, True
                dense_rate = res**3 / t_dense
                d1, d2 = vertex_to_surface(fine, dense), vertex_to_surface(dense, fine)
                share = 100 * min(np.mean(d1 < 1e-4), np.mean(d2 < 1e-4))
                agree = f"{share:.3f}% within 1e-4, max {max(d1.max(), d2.max()):.2e}"
            else:
                rate = dense_rate or stats["queries"] / t_fine
                t_dense, measured, agree = res**3 / rate, False, "n/a (dense not run)"
            rows.append((name, res, stats["dense"], stats["queries"], t_dense, t_fine, measured, agree))
            print(f"  {res}^3: dense {stats['dense']:,} queries {t_dense:.1f} "
                  f"s{'' if measured else ' (estimated)'} | coarse-to-fine {stats['queries']:,} queries "
                  f"{t_fine:.1f} s | queries x{stats['dense'] / stats['queries']:.1f}, time "
                  f"x{t_dense / t_fine:.1f} | vertices {agree}")
        # inference precision: bf16 autocast against fp32 on the points near the surface
        pts = np.random.default_rng(0).uniform(-1, 1, size=(200_000, 3)).astype(np.float32)
        f32 = model_sdf(model, code, dev)(pts)
        t0 = time.perf_counter()
        f32 = model_sdf(model, code, dev)(pts)
        t32 = time.perf_counter() - t0
        t0 = time.perf_counter()
        b16 = model_sdf(model, code, dev, precision="bf16")(pts)
        t16 = time.perf_counter() - t0
        near = np.abs(f32) < 0.05
        print(f"  bf16 inference: x{t32 / t16:.2f} speed, |bf16 - fp32| near the surface: mean "
              f"{np.abs(b16 - f32)[near].mean():.2e}, max {np.abs(b16 - f32)[near].max():.2e}; sign "
              f"agreement {np.mean(np.sign(b16) == np.sign(f32)):.5f}")
    print("\n| decoder | grid | dense queries | coarse-to-fine queries | ratio | dense s | coarse-to-fine s "
          "| ratio | vertices |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, res, nd, nq, td, tf, measured, agree in rows:
        print(f"| {name} | {res}^3 | {nd:,} | {nq:,} | {nd / nq:.1f}x | "
              f"{td:.1f}{'' if measured else ' (est.)'} | {tf:.1f} | {td / tf:.1f}x | {agree} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
