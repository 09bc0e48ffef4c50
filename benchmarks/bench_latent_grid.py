"""Local latent grids on synthetic multi-object scenes: the blend choice (trilinear interpolation of codes vs
DeepLS cell-local frames), the global code for reference, and the wall time of reconstructing a 5-object
scene from one scan.

Scenes are a stand-in for ``prep scenes``: K procedural shapes (``data_prep/shapes.py``) scaled to 0.35-0.6
of a 2.4-wide room, turned about the vertical axis and placed apart on the floor (bounding circles do not
overlap), written as one mesh per scene under ``WORK/meshes/scene/`` and prepared by ``prep meshes`` (category
``scene``, one scan of each held-out scene). Each method trains for the same epochs from the same preset
(``configs/scenes_latent_grid.yaml`` with the overrides below), then is measured with ``eval``'s conventions
(chamfer x1e3 of 30,000 points, F-score, normal consistency): training scenes from their learned codes
(representation) and held-out scenes from one scan (completion), meshed at 128^3.

    python benchmarks/bench_latent_grid.py                  # everything
    python benchmarks/bench_latent_grid.py --methods interpolate local global pointnet_grid --epochs 300

Times are wall seconds and CPU seconds of the process (CPU seconds are what the work costs whatever the
machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import trimesh

from deepsdf_ad.config import load_config
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.meshes import SamplingConfig
from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes
from deepsdf_ad.data_prep.shapes import FAMILIES, make_shape
from deepsdf_ad.evaluate import EvalOptions, evaluate_run
from deepsdf_ad.train import train

ROOT = Path(__file__).resolve().parents[1]

METHODS = {
    "interpolate": ("scenes_latent_grid.yaml", ["model.latent.kwargs.blend=interpolate"]),
    "local": ("scenes_latent_grid.yaml", ["model.latent.kwargs.blend=local"]),
    "global": ("scenes_global.yaml", []),
    "pointnet_grid": ("scenes_pointnet_grid.yaml", []),
}


def compose_scene(objects: int, rng: np.random.Generator, room: float = 2.4) -> trimesh.Trimesh:
    """``objects`` procedural shapes placed apart on a floor (z = 0) in a ``room`` x ``room`` square."""
    placed: list[tuple[np.ndarray, float]] = []
    parts = []
    for _ in range(objects):
        mesh = make_shape(FAMILIES[int(rng.integers(len(FAMILIES)))], rng)
        mesh.apply_translation(-mesh.bounds.mean(axis=0))
        mesh.apply_scale(rng.uniform(0.35, 0.6) * room / 2.4 / np.ptp(mesh.bounds, axis=0).max())
        mesh.apply_transform(trimesh.transformations.rotation_matrix(rng.uniform(0, 2 * np.pi), [0, 0, 1]))
        radius = float(np.linalg.norm(mesh.vertices[:, :2], axis=1).max())
        for _ in range(1000):
            xy = rng.uniform(-room / 2 + radius, room / 2 - radius, size=2)
            if all(np.linalg.norm(xy - c) > radius + r + 0.05 for c, r in placed):
                break
        else:
            raise RuntimeError("could not place the objects apart; use fewer or a larger room")
        placed.append((xy, radius))
        mesh.apply_translation([xy[0], xy[1], -mesh.bounds[0, 2]])
        parts.append(mesh)
    return trimesh.util.concatenate(parts)


def prepare(work: Path, scenes: int, objects: int, samples: int) -> Path:
    meshes, data = work / "meshes", work / "data"
    if not (data / formats.MANIFEST).is_file():
        rng = np.random.default_rng(0)
        (meshes / "scene").mkdir(parents=True, exist_ok=True)
        for k in range(scenes):
            compose_scene(objects, rng).export(meshes / "scene" / f"scene_{k:03d}.obj")
        t0 = time.perf_counter()
        prep_meshes(meshes, data, PrepConfig(SamplingConfig(samples=samples), test_fraction=0.25, scans=1),
                    workers=2, progress=False)
        print(f"prep: {scenes} scenes of {objects} objects, {samples} samples each: "
              f"{time.perf_counter() - t0:.0f} s")
    return data


def fit_blends(data: Path, steps: int, batch: int, resolution: int) -> dict:
    """The small fit that chose the default blend: the preset's decoder and one grid fitted together to one
    scene's SDF samples (the training loss, same steps and learning rates for both blends). Returns per blend
    the final loss, CPU seconds per step and the chamfer (x1e3) / F-score of the mesh against the scene."""
    import torch

    from deepsdf_ad.losses import sdf_loss
    from deepsdf_ad.meshing import mesh_sdf, model_sdf
    from deepsdf_ad.metrics import surface_metrics, surface_points_normals
    from deepsdf_ad.models import build_model

    ref = formats.DataRoot(data).shapes("train")[0]
    samples = torch.from_numpy(np.concatenate(formats.load_sdf_samples(ref.sdf)))
    truth = formats.load_points(ref.surface)
    out = {}
    for blend in ("interpolate", "local"):
        cfg = load_config("scenes_latent_grid", [f"model.latent.kwargs.blend={blend}"])
        torch.manual_seed(0)
        model = build_model(3, cfg.model.decoder, cfg.model.latent, 1)
        opt = torch.optim.Adam([{"params": model.decoder.parameters(), "lr": cfg.train.lr_decoder.initial},
                                {"params": model.latent.parameters(), "lr": cfg.train.lr_latent.initial}])
        g = torch.Generator().manual_seed(0)
        c0, losses = time.process_time(), []
        for _ in range(steps):
            b = samples[torch.randint(len(samples), (batch,), generator=g)][None]
            loss = sdf_loss(model.decode(model.latent.codes({"index": torch.tensor([0])}), b[..., :3]),
                            b[..., 3], cfg.train.clamp)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        cpu = (time.process_time() - c0) / steps
        model.eval()
        out[blend] = {"final_loss": round(float(np.mean(losses[-20:])), 5),
                      "cpu_seconds_per_step": round(cpu, 3)}
        try:
            mesh = mesh_sdf(model_sdf(model, model.latent.all_codes()[0], torch.device("cpu"), 65536),
                            resolution)
        except formats.DataError as e:
            out[blend]["failed"] = str(e)
        else:
            pts, normals = surface_points_normals(mesh, len(truth.points), 0)
            m = surface_metrics(pts, normals, truth.points, truth.normals)
            out[blend].update(chamfer_x1e3=round(m["chamfer"] * 1e3, 3), fscore=round(m["fscore"], 3),
                              normal_consistency=round(m.get("normal_consistency", float("nan")), 3))
        print(f"fit {blend} ({ref.key}, {steps} steps x {batch} samples): {json.dumps(out[blend])}",
              flush=True)
    return out


def summary(ev: dict) -> dict:
    a = ev["summary"]["all"]
    return {k: round(a[k]["median"], 4) for k in ("chamfer_x1e3", "fscore", "normal_consistency",
                                                  "code_seconds",
                                                  "mesh_seconds") if k in a} | {"failed": a["failed"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/bench_latent_grid")
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--objects", type=int, default=5)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--methods", nargs="+", default=["interpolate", "global"], choices=list(METHODS))
    ap.add_argument("--set", action="append", default=["train.samples_per_shape=4096"],
                    help="config overrides for every method")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--fit-steps", type=int, default=300, help="steps of the blend fit (0: skip it)")
    ap.add_argument("--fit-batch", type=int, default=4096)
    args = ap.parse_args(argv)
    work = Path(args.work)
    data = prepare(work, args.scenes, args.objects, args.samples)
    results = {}
    if args.fit_steps > 0:
        results["blend_fit"] = fit_blends(data, args.fit_steps, args.fit_batch, args.resolution)
    for name in args.methods:
        preset, extra = METHODS[name]
        run = work / f"run_{name}"
        cfg = load_config(preset, [*args.set, *extra])
        t0 = time.perf_counter()
        train(cfg, data, run, epochs=args.epochs, device="cpu", progress=False)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        rep = evaluate_run(run, data,
                           EvalOptions(split="train", input="full", resolution=args.resolution, limit=3),
                           device="cpu", progress=False)
        comp = evaluate_run(run, data, EvalOptions(split="test", input="scan", resolution=args.resolution),
                            device="cpu", progress=False)
        results[name] = {"train_seconds": round(sum(r["seconds"] for r in rows), 1),
                         "final_sdf_loss": round(rows[-1]["sdf_loss"], 5), "representation": summary(rep),
                         "completion_from_scan": summary(comp)}
        print(name, json.dumps(results[name]), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    # the acceptance's timing: one held-out 5-object scene from one scan, end to end through the CLI
    grid = next((n for n in ("interpolate", "local", "pointnet_grid") if n in args.methods), None)
    if grid is not None:
        ref = formats.DataRoot(data).shapes("test")[0]
        scan = formats.DataRoot(data).scan_paths(ref)[0]
        t0, c0 = time.perf_counter(), os.times()
        proc = subprocess.run([sys.executable, "-m", "deepsdf_ad", "reconstruct", str(scan), "--run",
                               str(work / f"run_{grid}"), "--out", str(work / "scene_completed.ply"),
                               "--resolution", str(args.resolution), "--device", "cpu"], capture_output=True,
                               text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds, c1 = time.perf_counter() - t0, os.times()
        cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
        print(f"reconstruct ({grid}) {ref.key} from one scan at {args.resolution}^3, end to end: "
              f"{seconds:.1f} s wall, {cpu:.1f} s CPU (exit {proc.returncode}) {proc.stdout.strip()[-300:]} "
              f"{proc.stderr.strip()[-300:]}")
        results["reconstruct"] = {"wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                                  "load_average": os.getloadavg()[0]}
    formats.write_json(work / "results.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
