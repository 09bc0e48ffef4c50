"""Training data larger than memory: the memory-mapped sample store against the in-memory bank.

In a temporary folder it makes itself (and deletes afterwards, whatever happens), the script writes a
synthetic data root without meshes: N shapes x S samples of random spheres (exact signed distances, uniform in
the cube), in DeepSDF's ``.npz`` layout (defaults 2,000 x 250,000: 8 GB of samples, 16 GB on disk with the
store). Then:

1. ``deepsdf-ad prep pack``: seconds and the packing process's peak RSS;
2. ``deepsdf-ad train`` with the store (``train.sample_store=mmap``), ``--steps`` steps, 1 rank and 2 ranks
   (``--nproc 2``: gloo on the CPU): each rank's peak RSS, their sum, and the peak of the ranks' summed PSS
   (proportional set size: a page shared by k processes counts 1/k in each, so the sum is what the node pays);
3. on a subset of the shapes that fits in memory (``--subset``): points/s of training steps from the store
   and from the in-memory bank (1 rank, two runs of each, alternated; median of the epochs after each run's
   first), points/s of the draw alone, and the memory of 1 and 2 ranks with the in-memory bank.

Targets: peak RSS per process <= 3 GB; store points/s >= 0.9 x the in-memory bank's; 2 ranks < 1.3 x the
memory of 1 rank. The decoder is small (4 x 64) so that the data path weighs in the step time.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_data_scale.py                 # full size
    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_data_scale.py --shapes 200    # 0.8 GB of samples
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from deepsdf_ad.data import SampleBank
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.pack import open_store
from deepsdf_ad.store import RESIDENT_BYTES, MappedBank

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "shapes_small.yaml"
MODEL = ["model.decoder.hidden=[64,64,64,64]", "model.decoder.latent_in=[2]", "model.latent.size=32",
         "train.shapes_per_batch=32", "train.samples_per_shape=4096", "train.checkpoint_every=1000000"]
GB = 1e9


def write_root(root: Path, shapes: int, samples: int, seed: int = 0) -> float:
    """``shapes`` random spheres of ``samples`` uniform samples each; returns the bytes written."""
    rng = np.random.default_rng(seed)
    ids, size = [], 0
    for i in range(shapes):
        q = rng.uniform(-1, 1, (samples, 3)).astype(np.float32)
        centre, radius = rng.uniform(-0.2, 0.2, 3).astype(np.float32), np.float32(rng.uniform(0.3, 0.6))
        s = np.linalg.norm(q - centre, axis=1) - radius
        rows = np.concatenate([q, s[:, None]], axis=1)
        sid = f"sphere{i:05d}"
        path = root / formats.SDF_DIR / "sphere" / f"{sid}.npz"
        formats.save_sdf_samples(path, rows[s > 0], rows[s <= 0])
        size += path.stat().st_size
        ids.append(sid)
    formats.write_split(root / formats.SPLITS_DIR / "train.json", {"sphere": ids})
    return size


def subset_root(full: Path, dest: Path, shapes: int) -> Path:
    """A data root of the first ``shapes`` shapes of ``full``, whose sample files it links to."""
    (dest / formats.SPLITS_DIR).mkdir(parents=True)
    (dest / formats.SDF_DIR).symlink_to(full / formats.SDF_DIR, target_is_directory=True)
    ids = [sid for _, _, sid in formats.read_split(full / formats.SPLITS_DIR / "train.json")][:shapes]
    formats.write_split(dest / formats.SPLITS_DIR / "train.json", {"sphere": ids})
    return dest


# ---- memory of a process tree ------------------------------------------------------------------
def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out += [int(c) for c in text]
    except OSError:
        pass
    return out


class Watch:
    """Samples the memory of a process (``ranks``: of its descendants, the ranks of a launcher) until it ends:
    each process's peak RSS (VmHWM), and the peaks over time of their summed PSS and of their summed RssFile
    (mapped file pages: the store's, and the libraries')."""

    def __init__(self, proc: subprocess.Popen, ranks: bool, every: float = 0.25):
        self.proc, self.ranks, self.every = proc, ranks, every
        self.hwm: dict[int, int] = {}
        self.pss_peak = self.file_peak = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _pids(self) -> list[int]:
        if not self.ranks:
            return [self.proc.pid]
        out, todo = [], _children(self.proc.pid)
        while todo:
            p = todo.pop()
            out.append(p)
            todo += _children(p)
        return out

    def _run(self) -> None:
        while self.proc.poll() is None:
            pids = self._pids()
            for p in pids:
                self.hwm[p] = max(self.hwm.get(p, 0), _status_kb(p, "VmHWM"))
            self.pss_peak = max(self.pss_peak, sum(_pss_kb(p) for p in pids))
            self.file_peak = max(self.file_peak, sum(_status_kb(p, "RssFile") for p in pids))
            time.sleep(self.every)

    def result(self) -> dict:
        self.thread.join()
        peaks = [v * 1024 for v in self.hwm.values() if v]
        return {"processes": len(peaks), "peak_rss": max(peaks, default=0), "sum_peak_rss": sum(peaks),
                "peak_pss": self.pss_peak * 1024, "peak_file": self.file_peak * 1024}


def run(args: list[str], ranks: bool = False, timeout: float = 7200) -> tuple[dict, float]:
    """``python -m deepsdf_ad ARGS``, watched: (memory, seconds); stops with its stderr if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "deepsdf_ad", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watch = Watch(proc, ranks)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"bench_data_scale: {' '.join(map(str, args[:2]))} failed:\n{err[-2000:]}")
    return watch.result(), time.perf_counter() - t0


def train(data: Path, out: Path, store: str, steps: int, shapes: int,
          nproc: int = 1) -> tuple[dict, list[float]]:
    """Train about ``steps`` steps; returns (memory, points/s of each epoch)."""
    batch = 32
    epochs = max(2, math.ceil(steps / math.ceil(shapes / batch)))
    sets = [a for kv in [*MODEL, f"train.sample_store={store}"] for a in ("--set", kv)]
    mem, _ = run(["train", "--config", PRESET, "--data", data, "--out", out, "--epochs", epochs, "--quiet",
                  "--device", "cpu", *sets, *(["--nproc", nproc] if nproc > 1 else [])], ranks=nproc > 1)
    rates = [json.loads(line)["points_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return mem, rates


def draw_rate(bank, shapes: int, batches: int = 40, batch: int = 32, n: int = 4096) -> float:
    """points/s of ``bank.draw`` alone, over ``batches`` random batches (after one warm-up pass)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(batches):
            bank.draw(torch.randint(0, shapes, (batch,), generator=g), n, g)
        seconds = time.perf_counter() - t0
    return batches * batch * n / seconds


def gb(x: float) -> str:
    return f"{x / GB:.2f} GB"


def compare(data: Path, tmp: Path, subset: int, steps: int, rows: list) -> tuple[dict, dict]:
    """Part 3 on the first ``subset`` shapes: (training points/s, draw points/s) of the in-memory bank and the
    store; the memory of each run is appended to ``rows``."""
    sub = subset_root(data, tmp / "subset", subset)
    run(["prep", "pack", sub, "--quiet"])
    # 1 rank: in-memory and store runs alternated, twice, so that a slow spell of the machine hits both
    rates: dict[str, list[float]] = {"memory": [], "mmap": []}
    runs = [(store, 1, k) for k in range(2) for store in ("memory", "mmap")]
    runs += [("memory", 2, 0), ("mmap", 2, 0)]
    for store, nproc, k in runs:
        mem, r = train(sub, tmp / f"sub_{store}_{nproc}_{k}", store, steps, subset, nproc)
        if nproc == 1:
            rates[store] += r[1:]
        if k == 0:
            name = "store" if store == "mmap" else "memory"
            rows.append((f"{name}, {nproc} rank{'s' * (nproc > 1)}, {subset} shapes", mem,
                         statistics.median(r[1:])))
            report(rows[-1])
    root = formats.DataRoot(sub)
    refs = root.shapes("train")
    draw = {"memory": draw_rate(SampleBank(refs, 3, progress=False, warn=False), subset),
            "mmap": draw_rate(MappedBank(open_store(root, refs)), subset)}
    return {k: statistics.median(v) for k, v in rates.items()}, draw


def report(row) -> None:
    label, mem, _ = row
    print(f"  {label}: peak RSS {gb(mem['peak_rss'])} per process, sum {gb(mem['sum_peak_rss'])}, peak PSS "
          f"{gb(mem['peak_pss'])}, mapped file pages {gb(mem['peak_file'])}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=int, default=2000, help="shapes of the synthetic data root")
    ap.add_argument("--samples", type=int, default=250_000, help="samples per shape")
    ap.add_argument("--subset", type=int, default=200,
                    help="shapes of the subset that fits in memory (0: leave part 3 out)")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the store runs")
    ap.add_argument("--compare-steps", type=int, default=100,
                    help="training steps of the points/s comparison")
    ap.add_argument("--tmp", help="where to make the temporary folder (default: the system's)")
    args = ap.parse_args(argv)
    need = 2.1 * args.shapes * args.samples * 16
    parent = Path(args.tmp or tempfile.gettempdir())
    free = shutil.disk_usage(parent).free
    if free < need * 1.1:
        print(f"bench_data_scale: {parent}: {gb(free)} free, {gb(need)} needed; use --tmp or fewer --shapes",
              file=sys.stderr)
        return 2
    subset = min(args.subset, args.shapes)
    print(f"machine: {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"torch {torch.__version__}; resident store pages per node {gb(RESIDENT_BYTES)}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_scale-", dir=parent))
    try:
        data = tmp / "data"
        t0 = time.perf_counter()
        size = write_root(data, args.shapes, args.samples)
        print(f"data: {args.shapes} shapes x {args.samples:,} samples, {gb(size)} of .npz in "
              f"{time.perf_counter() - t0:.0f} s -> {tmp}", flush=True)

        pack_mem, seconds = run(["prep", "pack", data, "--quiet"])
        store_bytes = sum(f.stat().st_size for f in (data / "store").glob("train.*.npy"))
        print(f"pack: {gb(store_bytes)} in {seconds:.0f} s, peak RSS {gb(pack_mem['peak_rss'])}", flush=True)

        rows = []
        for nproc in (1, 2):
            mem, rates = train(data, tmp / f"store_{nproc}", "mmap", args.steps, args.shapes, nproc)
            rows.append((f"store, {nproc} rank{'s' * (nproc > 1)}, {args.shapes} shapes", mem,
                         statistics.median(rates[1:])))
            report(rows[-1])

        rates, draw = compare(data, tmp, subset, args.compare_steps, rows) if subset else (None, None)

        print("\n| run | peak RSS per process | ranks' peak RSS summed | peak PSS summed | mapped file pages "
              "| points/s |")
        print("|---|---|---|---|---|---|")
        for label, mem, rate in rows:
            print(f"| {label} | {gb(mem['peak_rss'])} | {gb(mem['sum_peak_rss'])} | {gb(mem['peak_pss'])} | "
                  f"{gb(mem['peak_file'])} | {rate:,.0f} |")
        one, two = rows[0][1], rows[1][1]
        worst = max(m["peak_rss"] for _, m, _ in rows[:2])
        print(f"\npack: {gb(store_bytes)} store written in {seconds:.0f} s, peak RSS "
              f"{gb(pack_mem['peak_rss'])}")
        print(f"peak RSS per process with the store: {gb(worst)} (target <= 3 GB: "
              f"{'met' if worst <= 3 * GB else 'NOT met'})")
        if rates:
            ratio = rates["mmap"] / rates["memory"]
            print(f"training points/s, store / in-memory bank ({subset} shapes, 1 rank): "
                  f"{rates['mmap']:,.0f} / {rates['memory']:,.0f} = {ratio:.3f} (target >= 0.9: "
                  f"{'met' if ratio >= 0.9 else 'NOT met'})")
            print(f"draw alone, points/s: store {draw['mmap']:,.0f}, in-memory bank {draw['memory']:,.0f} "
                  f"= {draw['mmap'] / draw['memory']:.3f}")
        for what, key in (("ranks' peak RSS summed", "sum_peak_rss"), ("peak PSS summed", "peak_pss")):
            r = two[key] / one[key]
            print(f"2 ranks / 1 rank with the store, {what}: {gb(two[key])} / {gb(one[key])} = {r:.2f} "
                  f"(target < 1.3: {'met' if r < 1.3 else 'NOT met'})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"removed {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
