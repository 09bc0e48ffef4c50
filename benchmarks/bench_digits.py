"""Digits benchmark: held-out reconstruction IoU of the digits autodecoder on MNIST, in one run.

prep digits (the 10,000 MNIST test-set digits, split 80/20) -> train ``configs/digits_autodecoder.yaml``
for at most ``--minutes`` of wall time -> for held-out digits, find a code by latent optimisation against
their SDF samples -> IoU of the inside region, mean |SDF error| near the contour, on a 112^2 grid over
[-1, 1]^2 against the exact field of the digit (bilinear intensity >= 0.5). Prints the figures and writes a
picture of originals vs reconstructions vs samples.

    python benchmarks/bench_digits.py --work /tmp/bench_digits --picture docs/images/digits_results.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepsdf_ad.config import find_preset, load_config
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.digits import (
    DigitField,
    DigitSamplingConfig,
    find_idx_pairs,
    load_digit_set,
    prep_digits,
)
from deepsdf_ad.generate import sample_codes
from deepsdf_ad.losses import loss_clamp
from deepsdf_ad.meshing import evaluate_grid, field_picture, grid_points, model_sdf, picture_grid
from deepsdf_ad.metrics import iou, near_contour_error
from deepsdf_ad.reconstruct import (
    mean_training_code,
    observations_from_samples,
    optimise_codes,
    start_candidates,
)
from deepsdf_ad.runs import load_trained
from deepsdf_ad.train import train

ROOT = Path(__file__).resolve().parents[1]

MNIST = ROOT.parent / "shared" / "data" / "mnist"
PRESET = find_preset("digits_autodecoder")


def original_picture(image: np.ndarray, res: int) -> np.ndarray:
    """The digit's exact sdf field drawn like the decoded ones (same grid, colours and contour)."""
    field = DigitField(image)
    return field_picture(field.sdf(grid_points(res, 2).astype(np.float64)).reshape(res, res), "sdf")


def evaluate(run_path: Path, data: Path, images: dict[str, np.ndarray], n_eval: int, res: int, seed: int,
             batch: int = 50, device: str = "cpu", reconstruct=None) -> dict:
    """Held-out reconstruction by latent optimisation; IoU and near-contour error per digit.

    ``reconstruct``: the code search's settings (default: the run's own ``reconstruct`` config)."""
    from deepsdf_ad.runs import Run

    dev = torch.device(device)
    run = Run(run_path)
    cfg, model = load_trained(run, dev)
    if reconstruct is not None:  # the preset's (and --set's) code search, not the one saved with the run
        cfg.reconstruct = reconstruct
    refs = formats.DataRoot(data).shapes("test")
    rng = np.random.default_rng(seed)
    refs = [refs[i] for i in sorted(rng.choice(len(refs), size=min(n_eval, len(refs)), replace=False))]
    mean = mean_training_code(run)
    candidates = start_candidates(run, cfg.reconstruct)
    pts = grid_points(res, 2).astype(np.float64)
    ious, errs, codes = [], [], []
    t0 = time.perf_counter()
    for s in range(0, len(refs), batch):
        chunk = refs[s:s + batch]
        obs = [observations_from_samples(np.concatenate(formats.load_sdf_samples(r.sdf))) for r in chunk]
        init = mean.reshape(1, -1).repeat(len(chunk), 1)
        found, _ = optimise_codes(model, obs, cfg.reconstruct, loss_clamp(cfg), dev, init=init, seed=seed + s,
                                  candidates=candidates)
        for r, code in zip(chunk, found, strict=True):
            pred = evaluate_grid(model_sdf(model, code, dev), res, 2)
            true = DigitField(images[r.id]).sdf(pts).reshape(res, res)
            ious.append(iou(pred < 0, true < 0))
            errs.append(near_contour_error(pred, true))
            codes.append(code)
        print(f"  evaluated {len(ious)}/{len(refs)}: mean IoU so far {np.mean(ious):.4f}", flush=True)
    return {"refs": refs, "iou": np.array(ious), "err": np.array(errs), "codes": torch.stack(codes),
            "seconds": time.perf_counter() - t0, "model": model, "cfg": cfg}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", default=str(MNIST), help="folder with the MNIST IDX files")
    ap.add_argument("--work", default="/tmp/bench_digits", help="folder for data and run")
    ap.add_argument("--config", default=str(PRESET))
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall-time budget")
    ap.add_argument("--samples", type=int, default=4096, help="SDF samples per digit")
    ap.add_argument("--eval", type=int, default=200, help="held-out digits reconstructed")
    ap.add_argument("--resolution", type=int, default=112, help="evaluation grid points per axis")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--picture", help="write originals / reconstructions / samples here (PNG)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    work = Path(args.work)
    data, run_dir = work / "data", work / "run"

    t0 = time.perf_counter()
    manifest = prep_digits(args.mnist, data, DigitSamplingConfig(samples=args.samples), test_fraction=0.2,
                           seed=args.seed)
    print(f"prep: {json.dumps(manifest['summary'])} ({time.perf_counter() - t0:.0f} s, reused if unchanged)")

    cfg = load_config(args.config, args.set)
    t1 = time.perf_counter()
    run = train(cfg, data, run_dir, device="cpu", max_seconds=args.minutes * 60, progress=False)
    wall = time.perf_counter() - t1
    rows = run.metrics()
    train_seconds = sum(r["seconds"] for r in rows)
    print(f"train: {len(rows)} epochs on {manifest['summary']['train']} digits, {train_seconds:.0f} s of "
          f"training ({wall:.0f} s wall in this call, {torch.get_num_threads()} threads), "
          f"final loss {rows[-1]['loss']:.5f}")

    images = {}
    for prefix, img_path, lab_path in find_idx_pairs(args.mnist):
        ds = load_digit_set(prefix, img_path, lab_path)
        images.update({f"{prefix}-{i:05d}": ds.images[i] for i in range(len(ds.images))})
    ev = evaluate(run_dir, data, images, args.eval, args.resolution, args.seed, reconstruct=cfg.reconstruct)
    res = {
        "heldout_digits": int(len(ev["iou"])),
        "heldout_iou_mean": round(float(ev["iou"].mean()), 4),
        "heldout_iou_median": round(float(np.median(ev["iou"])), 4),
        "heldout_near_contour_sdf_error": round(float(ev["err"].mean()), 5),
        "train_digits": manifest["summary"]["train"],
        "epochs": len(rows),
        "train_seconds": round(train_seconds, 1),
        "reconstruction_iterations": ev["cfg"].reconstruct.iterations,
        "eval_seconds": round(ev["seconds"], 1),
    }
    print(json.dumps(res, indent=2))
    print(f"held-out reconstruction IoU: {res['heldout_iou_mean']:.4f}")

    if args.picture:
        model = ev["model"]
        dev = torch.device("cpu")
        r = args.resolution
        k = 8
        order = np.random.default_rng(args.seed + 1).choice(len(ev["refs"]), size=k, replace=False)
        originals = [original_picture(images[ev["refs"][i].id], r) for i in order]
        recons = [field_picture(evaluate_grid(model_sdf(model, ev["codes"][i], dev), r, 2),
                                "sdf") for i in order]
        new = sample_codes(model.latent.all_codes().cpu(), k, np.random.default_rng(args.seed))
        samples = [field_picture(evaluate_grid(model_sdf(model, c, dev), r, 2), "sdf") for c in new]
        formats.save_png(args.picture, picture_grid(originals + recons + samples, k))
        print(f"picture: rows = held-out originals, their reconstructions, samples -> {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
