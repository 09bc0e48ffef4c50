"""GPU check: one script, a few minutes on one GPU, from data prepared beforehand that travels with it.

On the DeepSDF chair-spec decoder (``configs/deepsdf_chairs.yaml``: 8 x 512, weight norm, dropout 0.2, codes
of 256, 64 shapes x 16,384 samples per step) it prints:

1. training points/s in bf16 and in fp32: the full step (``deepsdf_ad.train.train``: sampling, codes,
   decoder, loss, backward, Adam; median of the epochs after the first two) against the decoder alone
   (forward, backward and Adam on a batch already on the device), and the peak device memory of each;
2. ``deepsdf-ad reconstruct`` end to end (a new process: start, loading, code search, meshing at 256^3,
   writing) of a held-out shape's scan, with a run of the preset trained for it (90 s in bf16, no dropout);
3. meshing: decoder queries/s on the dense 256^3 grid (fp32 and bf16), and the seconds of the coarse-to-fine
   mesher;
4. kill and resume: a training process killed with SIGKILL after its first checkpoint and started again ends
   with the same weights, codes and optimiser state as an uninterrupted run (largest difference printed; when
   it is not bit for bit, also that of two uninterrupted runs, the device's own floor).

Peak device memory is ``torch.cuda.max_memory_allocated`` (CUDA only). The check imports torch, numpy, scipy,
scikit-image, safetensors, pyyaml, tqdm and trimesh (and this repository), never open3d, libigl or pyrender.

    python benchmarks/gpu_check.py --prepare DIR            # here: procedural shapes -> DIR (26 MB)
    python benchmarks/gpu_check.py DIR                      # on the GPU machine, from the repository root
    python benchmarks/gpu_check.py DIR --device cpu --quick # CI: checks the script in under a minute
                                                            # (DIR made with --prepare DIR --quick)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import deepsdf_ad  # noqa: F401
except ImportError:
    # the GPU machine gets a copy of the repository tree, not an installed package: import it from the tree
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from deepsdf_ad.config import load_config  # noqa: E402
from deepsdf_ad.data_prep import formats  # noqa: E402
from deepsdf_ad.meshing import evaluate_grid, mesh_sdf, model_sdf  # noqa: E402
from deepsdf_ad.models import build_model  # noqa: E402
from deepsdf_ad.runs import Run, load_trained  # noqa: E402
from deepsdf_ad.train import make_optimizer, timed_steps, train  # noqa: E402

CHAIRS = ROOT / "configs" / "deepsdf_chairs.yaml"
MARKER = "gpu_check.json"
"""``DIR/gpu_check.json``: what ``--prepare`` made (sizes), so the check knows its data."""
SPLIT = "train64.json"
"""``DIR/train64.json``: the training shapes of the check (64, one chair-spec batch)."""
PARTIAL = "partial.ply"
QUICK = ["model.decoder.hidden=[64,64,64,64,64,64,64,64]", "model.latent.size=16",
         "train.samples_per_shape=1024"]
"""``--quick``: the chair architecture narrowed, so that a CPU runs the whole script in seconds."""
MAX_PREPARED_MB = 50
TRAIN_SECONDS = 90.0
"""Training of the run that ``reconstruct`` and the mesher use (on the GPU)."""


# ---- preparing the data (here) ---------------------------------------------------------------
def prepare(folder: Path, quick: bool) -> int:
    """Procedural meshes -> a data root, a split of the training shapes and a scan of a held-out shape."""
    from deepsdf_ad.data_prep.meshes import SamplingConfig, load_mesh, normalization
    from deepsdf_ad.data_prep.params import CameraConfig
    from deepsdf_ad.data_prep.pipeline import PrepConfig, prep_meshes
    from deepsdf_ad.data_prep.scans import save_scan, scan_mesh
    from deepsdf_ad.data_prep.shapes import write_family

    per_family, samples = (3, 2_000) if quick else (25, 20_000)
    with tempfile.TemporaryDirectory() as tmp:
        meshes = Path(tmp) / "meshes"
        write_family(meshes, per_family=per_family, seed=0)
        sampling = SamplingConfig(samples=samples, surface_points=1_000)
        prep_meshes(meshes, folder / "data", PrepConfig(sampling, test_fraction=0.34 if quick else 0.1),
                    progress=False)
        _, cat, sid = formats.read_split(folder / "data" / formats.SPLITS_DIR / formats.TEST_SPLIT)[0]
        gt = load_mesh(meshes / cat / f"{sid}.obj")
        scan = scan_mesh(gt, CameraConfig(azimuth=35.0, elevation=25.0, resolution=128 if not quick else 48))
        save_scan(folder / PARTIAL, scan, normalization(gt))
    train_ids = formats.read_split(folder / "data" / formats.SPLITS_DIR / formats.TRAIN_SPLIT)[:64]
    by_cat: dict[str, list[str]] = {}
    for _, c, i in train_ids:
        by_cat.setdefault(c, []).append(i)
    formats.write_split(folder / SPLIT, by_cat)
    formats.write_json(folder / MARKER, {"quick": quick, "shapes": len(train_ids), "samples": samples,
                                         "held_out": f"{cat}/{sid}"})
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"gpu_check --prepare: {len(train_ids)} training shapes x {samples:,} samples, a scan of "
          f"{cat}/{sid} -> {folder} ({size / 1e6:.1f} MB)")
    if size > MAX_PREPARED_MB * 1e6:
        print(f"gpu_check --prepare: {folder} holds {size / 1e6:.1f} MB, more than {MAX_PREPARED_MB} MB",
              file=sys.stderr)
        return 1
    return 0


# ---- the measurements (there) ----------------------------------------------------------------
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gb(dev: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(dev) / 1e9, 2) if dev.type == "cuda" else None


def chair_config(quick: bool, shapes: int, *extra: str):
    """The chair preset, its batch the prepared training shapes (64), narrowed with ``quick``."""
    batch = f"train.shapes_per_batch={min(64, shapes)}"
    return load_config(CHAIRS, [*(QUICK if quick else []), batch, *extra])


def full_step(cfg, folder: Path, out: Path, dev: torch.device, epochs: int, seconds: float | None) -> dict:
    """points/s of the real training loop (an epoch = one step of the 64 shapes), after two warm-up steps."""
    reset_peak(dev)
    run = train(cfg, folder / "data", out, epochs=epochs, device=str(dev), split_file=str(folder / SPLIT),
                progress=False, max_seconds=seconds)
    rates = [r["points_per_s"] for r in run.metrics()]
    return {"points_per_s": round(statistics.median(rates[2:] if len(rates) > 3 else rates)),
            "epochs": len(rates), "peak_gb": peak_gb(dev)}


def trained_run(folder: Path, out: Path, dev: torch.device, quick: bool, shapes: int) -> dict:
    """A run of the chair preset to reconstruct and mesh with: without dropout (as
    ``benchmarks/bench_end_to_end.py`` trains it, so that minutes give a shape), bf16, for
    :data:`TRAIN_SECONDS`; with ``quick``, 80 steps in fp32 at higher learning rates (a CPU in seconds)."""
    extra = ["model.decoder.dropout=0.0", "train.checkpoint_every=100000"]
    if quick:
        extra += ["train.precision=fp32", "train.lr_decoder.initial=1e-3", "train.lr_latent.initial=5e-3"]
    else:
        extra += ["train.precision=bf16"]
    cfg = chair_config(quick, shapes, *extra)
    t0 = time.perf_counter()
    run = train(cfg, folder / "data", out, epochs=80 if quick else 100_000, device=str(dev),
                split_file=str(folder / SPLIT), progress=False, max_seconds=None if quick else TRAIN_SECONDS)
    rows = run.metrics()
    return {"steps": len(rows), "seconds": round(time.perf_counter() - t0, 1), "final_loss": rows[-1]["loss"]}


def decoder_alone(cfg, dev: torch.device, steps: int) -> dict:
    """points/s of forward + backward + Adam, in the training loop's parts, on a batch already on ``dev``."""
    torch.manual_seed(0)
    tc = cfg.train
    b, n = tc.shapes_per_batch, tc.samples_per_shape
    model = build_model(cfg.dim, cfg.model.decoder, cfg.model.latent, b).to(dev)
    opt = make_optimizer(model, cfg)
    g = torch.Generator(device=dev).manual_seed(0)
    samples = torch.rand(b, n, cfg.dim + 1, device=dev, generator=g) * 2 - 1
    samples[..., -1] *= 0.1
    batch = {"index": torch.arange(b, device=dev), "samples": samples}
    reset_peak(dev)
    rates = timed_steps(model, opt, cfg, batch, dev, steps)
    return {"points_per_s": round(statistics.median(rates[2:] if len(rates) > 3 else rates)), "steps": steps,
            "peak_gb": peak_gb(dev)}


def _command(args) -> tuple[list[str], dict[str, str]]:
    """``python -m deepsdf_ad ARGS`` from this repository (installed or not), and its environment."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", "deepsdf_ad", *map(str, args)], {**os.environ, "PYTHONPATH": path}


def cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd, env = _command(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def reconstruct(folder: Path, run: Path, out: Path, dev: torch.device, quick: bool) -> dict:
    resolution = 32 if quick else 256
    extra = ["--iterations", "10"] if quick else []
    t0 = time.perf_counter()
    proc = cli("reconstruct", folder / PARTIAL, "--run", run, "--out", out / "completed.ply", "--resolution",
               resolution, "--device", dev.type, "--quiet", "--restarts", 2, *extra)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        error = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"ok": False, "error": error, "seconds": round(seconds, 2)}
    return {"ok": True, "seconds": round(seconds, 2), "resolution": resolution, "says": proc.stdout.strip()}


def meshing(run: Path, dev: torch.device, quick: bool) -> dict:
    resolution = 32 if quick else 256
    _, model = load_trained(Run(run), dev)
    code = model.latent.all_codes()[0]
    out = {"resolution": resolution}
    for precision in ("fp32", "bf16"):
        fn = model_sdf(model, code, dev, precision=precision)
        evaluate_grid(fn, 16)  # warm-up
        fn.counter["queries"] = 0
        reset_peak(dev)
        t0 = time.perf_counter()
        evaluate_grid(fn, resolution)
        seconds = time.perf_counter() - t0
        out[f"dense_{precision}_queries_per_s"] = round(fn.counter["queries"] / seconds)
        out[f"dense_{precision}_peak_gb"] = peak_gb(dev)
    fn = model_sdf(model, code, dev, precision="bf16")
    t0 = time.perf_counter()
    try:
        mesh_sdf(fn, resolution)
        out["adaptive_bf16_seconds"] = round(time.perf_counter() - t0, 3)
        out["adaptive_bf16_queries"] = fn.counter["queries"]
    except formats.DataError as e:  # a field without a surface (too little training): said, not fatal
        out["adaptive_bf16_error"] = str(e)
    return out


def _train_cmd(folder: Path, out: Path, dev: torch.device, quick: bool, epochs: int) -> list[str]:
    sets = [*(QUICK if quick else []), "train.shapes_per_batch=16", "train.samples_per_shape=2048",
            "train.checkpoint_every=2", "train.keep_checkpoints=0"]
    return ["train", "--config", str(CHAIRS), "--data", str(folder / "data"), "--split", str(folder / SPLIT),
            "--out", str(out), "--epochs", str(epochs), "--quiet", "--device", dev.type,
            *[a for kv in sets for a in ("--set", kv)]]


def _final(out: Path, epochs: int) -> dict[str, torch.Tensor]:
    state = load_file(str(out / "checkpoints" / f"epoch_{epochs:06d}.safetensors"))
    state["codes_file"] = load_file(str(out / "latent_codes.safetensors"))["codes"]
    return state


def _largest_difference(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        return math.inf
    return max((float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0) for k in a)


def kill_and_resume(folder: Path, work: Path, dev: torch.device, quick: bool) -> dict:
    epochs = 4 if quick else 10
    ref, killed = work / "ref", work / "killed"
    proc = cli(*_train_cmd(folder, ref, dev, quick, epochs), timeout=600)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip()[-500:]}
    cmd, env = _command(_train_cmd(folder, killed, dev, quick, epochs))
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 600
    while p.poll() is None and not Run(killed).checkpoints() and time.monotonic() < deadline:
        time.sleep(0.01)
    was_killed = p.poll() is None
    if was_killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    at = max((c["epoch"] for c in Run(killed).checkpoints()), default=0)
    proc = cli(*_train_cmd(folder, killed, dev, quick, epochs), timeout=600)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip()[-500:]}
    diff = _largest_difference(_final(ref, epochs), _final(killed, epochs))
    out = {"killed": was_killed, "killed_after_epoch": at, "epochs": epochs, "largest_difference": diff,
           "bitwise": diff == 0.0}
    if diff > 0:  # how far two uninterrupted runs differ on this device
        again = work / "ref_again"
        cli(*_train_cmd(folder, again, dev, quick, epochs), timeout=600)
        out["uninterrupted_runs_differ_by"] = _largest_difference(_final(ref, epochs), _final(again, epochs))
    # not bit for bit: the same only when within the device's own run-to-run difference
    floor = out.get("uninterrupted_runs_differ_by", 0.0)
    out["ok"] = was_killed and (diff == 0.0 or diff <= 10 * floor + 1e-6)
    return out


def check(folder: Path, device: str, quick: bool, work: Path) -> dict:
    marker = folder / MARKER
    if not marker.is_file():
        raise SystemExit(f"gpu_check: {folder}: no {MARKER}; make the data with "
                         f"'gpu_check.py --prepare {folder}'")
    made = json.loads(marker.read_text())
    if made["quick"] and not quick:
        raise SystemExit(f"gpu_check: {folder} was prepared with --quick; prepare it again without")
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    cpu = f"CPU, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu
    print(f"device: {name}; torch {torch.__version__}; data {folder} ({made['shapes']} shapes x "
          f"{made['samples']:,} samples){'; --quick' if quick else ''}", flush=True)
    result: dict = {"device": name, "torch": torch.__version__, "quick": quick}
    t_all = time.perf_counter()

    stage = Stages()
    print("\n1. training points/s, chair-spec decoder (full step vs decoder alone)", flush=True)
    result["train"] = {}
    for precision, steps in (("bf16", 5 if quick else 20), ("fp32", 5 if quick else 12)):
        cfg = chair_config(quick, made["shapes"], f"train.precision={precision}")
        full = full_step(cfg, folder, work / f"speed_{precision}", dev, steps, None)
        alone = decoder_alone(cfg, dev, steps)
        ratio = full["points_per_s"] / alone["points_per_s"]
        result["train"][precision] = {"full_step": full, "decoder_alone": alone, "ratio": round(ratio, 3)}
        mem = "" if dev.type != "cuda" else f"; peak {full['peak_gb']} GB / {alone['peak_gb']} GB"
        print(f"  {precision}: full step {full['points_per_s']:,} points/s ({full['epochs']} steps), decoder "
              f"alone {alone['points_per_s']:,} points/s, ratio {ratio:.3f}{mem}", flush=True)

    run = work / "run"
    how = "80 steps, fp32" if quick else f"{TRAIN_SECONDS:.0f} s, bf16"
    stage.done()
    print(f"\n2. reconstruct end to end (a new process), with a run trained for it ({how}, no dropout)",
          flush=True)
    result["reconstruct_run"] = trained_run(folder, run, dev, quick, made["shapes"])
    result["reconstruct"] = reconstruct(folder, run, work, dev, quick)
    r = result["reconstruct"]
    said = r["says"] if r["ok"] else f"FAILED: {r['error']}"
    print(f"  {r['seconds']} s at {r.get('resolution', '?')}^3: {said}", flush=True)

    stage.done()
    print("\n3. meshing", flush=True)
    m = result["meshing"] = meshing(run, dev, quick)
    mem = "" if dev.type != "cuda" else f"; peak {m['dense_bf16_peak_gb']} GB"
    print(f"  dense {m['resolution']}^3: fp32 {m['dense_fp32_queries_per_s']:,} queries/s, bf16 "
          f"{m['dense_bf16_queries_per_s']:,} queries/s{mem}", flush=True)
    if "adaptive_bf16_seconds" in m:
        print(f"  coarse-to-fine {m['resolution']}^3 (bf16): {m['adaptive_bf16_seconds']} s, "
              f"{m['adaptive_bf16_queries']:,} queries", flush=True)
    else:
        print(f"  coarse-to-fine: no mesh ({m['adaptive_bf16_error']})", flush=True)

    stage.done()
    print("\n4. kill and resume vs an uninterrupted run", flush=True)
    k = result["kill_resume"] = kill_and_resume(folder, work / "faults", dev, quick)
    if "largest_difference" in k:
        floor = (f"; two uninterrupted runs differ by {k['uninterrupted_runs_differ_by']:.3g}"
                 if "uninterrupted_runs_differ_by" in k else "")
        same = "bit for bit the same" if k["bitwise"] else f"largest difference {k['largest_difference']:.3g}"
        print(f"  killed after epoch {k['killed_after_epoch']} of {k['epochs']}, resumed: {same}{floor} -> "
              f"{'ok' if k['ok'] else 'FAILED'}", flush=True)
    else:
        print(f"  FAILED: {k['error']}", flush=True)

    stage.done()
    result["stage_seconds"] = stage.seconds
    result["peak_gb"] = max(_peaks(result), default=None)
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    result["ok"] = bool(result["reconstruct"]["ok"] and k.get("ok"))
    loaded = {m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}  # None: blocked
    names = loaded - set(sys.stdlib_module_names) - {"deepsdf_ad"}
    third = sorted(n for n in names if not n.startswith("_") and n != "cython_runtime")  # not extensions
    result["imported"] = third
    peak = f"{result['peak_gb']} GB" if result["peak_gb"] is not None else "n/a (not CUDA)"
    print(f"\npeak device memory: {peak}; {result['seconds']} s in all; "
          f"{'all checks ok' if result['ok'] else 'SOME CHECKS FAILED'}")
    print(f"third-party modules imported: {', '.join(third)}")
    return result


class Stages:
    """Seconds of each stage, printed as each ends."""

    def __init__(self):
        self.t0, self.seconds = time.perf_counter(), []

    def done(self) -> None:
        now = time.perf_counter()
        self.seconds.append(round(now - self.t0, 1))
        self.t0 = now
        print(f"  ({self.seconds[-1]} s)", flush=True)


def _peaks(result: dict):
    for v in result.values():
        if isinstance(v, dict):
            yield from _peaks(v)
    for k, v in result.items():
        if k.endswith("peak_gb") and isinstance(v, (int, float)):
            yield v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", metavar="DIR", help="the data --prepare made")
    ap.add_argument("--prepare", action="store_true", help="make DIR (here, before the GPU machine)")
    ap.add_argument("--device", default="auto", help="auto (CUDA if there is one), cuda, cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the script, not the machine")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = ap.parse_args(argv)
    folder = Path(args.dir)
    if args.prepare:
        if folder.exists() and any(folder.iterdir()):
            print(f"gpu_check --prepare: {folder}: exists and is not empty; use a new folder",
                  file=sys.stderr)
            return 2
        return prepare(folder, args.quick)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        result = check(folder, args.device, args.quick, Path(work))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
