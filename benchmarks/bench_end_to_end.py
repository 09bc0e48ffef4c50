"""End-to-end benchmark: wall time of ``deepsdf-ad reconstruct partial.ply`` as a user runs it.

A run of each preset is trained for a few minutes on procedural shapes (or reused from ``--work``; the
DeepSDF-size preset with smaller batches in bf16, so that its field is a shape after minutes, not hours: how
many points the coarse-to-fine mesher and the plateau schedule need depends on that), a held-out shape is
scanned, and the real CLI is timed (process start, loading, code optimisation, meshing at ``--resolution``,
writing), median of ``--repeat``, for each ``--precision``. A reused run first gets the preset's current
``reconstruct`` and ``mesh`` sections, so that it times the code search and meshing as they are now.

    python benchmarks/bench_end_to_end.py                       # small preset and DeepSDF-size preset, 256^3
    python benchmarks/bench_end_to_end.py --presets shapes_small --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from deepsdf_ad.config import load_config
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.meshes import (
    SamplingConfig,
    load_mesh,
    normalization,
)
from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes
from deepsdf_ad.data_prep.scans import CameraConfig, save_scan, scan_mesh
from deepsdf_ad.data_prep.shapes import write_family
from deepsdf_ad.runs import Run
from deepsdf_ad.train import train

PRESETS = {"shapes_small": "shapes_small", "deepsdf_chairs": "deepsdf_chairs"}
"""Benchmark name -> preset name (:func:`deepsdf_ad.config.find_preset`)."""
TARGETS = {"shapes_small": 15.0, "deepsdf_chairs": 60.0}
TRAIN_SET = {"shapes_small": [],
             "deepsdf_chairs": ["model.decoder.dropout=0.0", "train.shapes_per_batch=8",
                                "train.samples_per_shape=2048", "train.precision=bf16",
                                "train.lr_decoder.initial=5e-4"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/bench_end_to_end")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train-minutes", type=float, default=3.0)
    ap.add_argument("--precision", nargs="+", default=["preset"], choices=("preset", "fp32", "bf16"),
                    help="reconstruct --precision values timed (preset: no flag, the preset's own)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    meshes, data = work / "meshes", work / "data"
    if not meshes.is_dir():
        write_family(meshes, per_family=8, seed=0)
    prep_meshes(meshes, data, PrepConfig(SamplingConfig(samples=30_000), test_fraction=0.2), progress=False)
    _, cat, sid = formats.read_split(data / formats.SPLITS_DIR / formats.TEST_SPLIT)[0]
    gt = load_mesh(meshes / cat / f"{sid}.obj")
    partial = work / "partial.ply"
    save_scan(partial, scan_mesh(gt, CameraConfig(azimuth=35.0, elevation=25.0, resolution=128)),
              normalization(gt))
    print(f"{os.cpu_count()} CPU cores; held-out shape {cat}/{sid}; resolution {args.resolution}^3")
    rows = []
    for name in args.presets:
        run = work / f"run_{name}"
        preset = load_config(PRESETS[name], TRAIN_SET[name])
        if not (run / "latent_codes.safetensors").is_file():
            train(preset, data, run, device="cpu", progress=False, max_seconds=args.train_minutes * 60)
        # a reused run times the preset's code search and meshing as they are now, not as when it was trained
        saved = Run(run).config()
        saved.reconstruct, saved.mesh = preset.reconstruct, preset.mesh
        Run(run).save_config(saved)
        for precision in args.precision:
            times = []
            for _ in range(args.repeat):
                out = work / f"completed_{name}_{precision}.ply"
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "deepsdf_ad", "reconstruct", str(partial),
                                       "--run", str(run), "--out", str(out), "--resolution",
                                       str(args.resolution), "--device",
                                       "cpu"] + ([] if precision == "preset" else ["--precision", precision]),
                                      capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if proc.returncode != 0:
                    print(proc.stderr)
                    return 1
            med = statistics.median(times)
            rows.append({"preset": name, "precision": precision, "seconds_median": round(med, 2),
                         "runs": [round(t, 2) for t in times], "target_s": TARGETS[name],
                         "ratio_to_target": round(med / TARGETS[name], 3)})
            print(f"  {name} {precision}: reconstruct {med:.1f} s (median of {len(times)}: "
                  f"{', '.join(f'{t:.1f}' for t in times)}); target {TARGETS[name]:.0f} s -> "
                  f"{med / TARGETS[name]:.2f} of the budget; {proc.stdout.strip()}", flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
