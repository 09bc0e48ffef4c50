"""3D quality: the shapes_cpu presets (autodecoder and its autoencoder twin) against the obvious baselines.

Prepares the shared meshes (134 of 160 pass prep; 20% of each category held out, at least 6 per category) with
one partial scan per shape (az 30 deg, el 20 deg, ``deepsdf-ad scan``'s camera), trains both presets (or
reuses runs), and prints per category, chamfer x10^3 (DeepSDF's convention: 30,000 points, squared distances,
both directions summed, unit-sphere frame) mean and median, F-score@1% and normal consistency (ONet's
conventions):

- representation: the training shapes, from the autodecoder's learned codes and the encoder's codes;
- held-out (full): held-out shapes from all their SDF samples (AD optimise; AE encode; AE encode+refine);
- completion (1 scan): held-out shapes from their scan (the same three), and three baselines: the scan's own
  points, Open3D's screened Poisson of the scan, and the nearest training shape (the one whose surface lies
  closest to the scan points; no ground truth used).

Every failure (empty or broken mesh) counts as the section's worst chamfer, F-score 0 and normal consistency
0, and is counted in the table. Verdicts come from a paired Wilcoxon signed-rank test on all held-out shapes
(n >= 10); per category only the medians are shown. Then the quality-vs-training-minutes curve: representation
and completion at the run's checkpoints (about 1/6, 1/3, 2/3 and all of the run: 5, 10, 20, 30 minutes for a
30-minute preset), drawn to WORK/quality_curve.png; and one figure per category (scan, AD, AE, truth).

    python benchmarks/bench_quality.py --work /tmp/bench_quality              # everything (about 2 hours on 2
    cores)
    python benchmarks/bench_quality.py --ad-run RUN_AD --ae-run RUN_AE --data DATA --work DIR
    python benchmarks/bench_quality.py ... --only repr scan --limit 4 --resolution 128   # a quick look
    python benchmarks/bench_quality.py ... --extra    # + an autodecoder on the 720 extra meshes, same steps

With ``--extra`` the shared archive of 720 more training meshes is extracted once (WORK/extra_meshes, with a
completion marker: a folder extracted by an older bench has none, remove it) and prepared under WORK (never in
tests) and a third run, ``ad+``, trains the autodecoder preset on all of them plus DATA's training shapes for
the preset's number of decoder steps (fewer epochs, so fewer updates per code): more shapes against more
updates per shape, in the same time, on the same held-out shapes.

Results are cached per section in WORK/results/*.json, so an interrupted bench resumes (``--fresh`` redoes
them).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepsdf_ad.baselines import nearest_shape, poisson_mesh
from deepsdf_ad.compare import score_failed
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.archives import extract_once
from deepsdf_ad.data_prep.formats import DataRoot
from deepsdf_ad.evaluate import EvalOptions, Truth3D, evaluate_run, scan_in_frame, select
from deepsdf_ad.metrics import surface_metrics, surface_points_normals

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
METHODS = {  # section -> [(label, run, mode)]
    "repr": [("AD (learned codes)", "ad", None), ("AE (encode)", "ae", "encode"),
             ("AD+ (learned codes)", "ad+", None)],
    "full": [("AD (optimise)", "ad", "optimise"), ("AE (encode)", "ae", "encode"),
             ("AE (encode+refine)", "ae", "encode+refine")],
    "scan": [("AD (optimise)", "ad", "optimise"), ("AD+ (optimise)", "ad+", "optimise"),
             ("AE (encode)", "ae", "encode"),
             ("AE (encode+refine)", "ae", "encode+refine")],
}
SECTION_TITLES = {"repr": "representation (training shapes)", "full": "held-out, from all SDF samples",
                  "scan": "held-out completion from one scan"}
NEAREST_PLUS = "nearest training shape, + extra"
"""The nearest-shape baseline over the ``ad+`` run's training shapes."""
SPLIT_INPUT = {"repr": ("train", "full"), "full": ("test", "full"), "scan": ("test", "scan")}


def sh(*args: str) -> None:
    print("$ deepsdf-ad " + " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "deepsdf_ad", *map(str, args)], check=True)


def prepare(work: Path, meshes: Path) -> Path:
    """WORK/data: the shared meshes, 250,000 samples each, one scan per shape (prep reuses what an earlier,
    possibly killed, run finished: its manifest is written while it works, so it is always run)."""
    data = work / "data"
    sh("prep", "meshes", meshes, "--out", data, "--samples", 250_000, "--scans", 1, "--workers", 2, "--quiet")
    return data


def train_preset(work: Path, data: Path, name: str, out: str | None = None, *extra: str) -> Path:
    run = work / "runs" / (out or name)
    sh("train", "--config", name, "--data", data, "--out", run, "--quiet", *extra)
    return run


def extra_data(work: Path, data: Path, tarball: Path) -> Path:
    """WORK/data_plus: DATA's shapes plus the extra training meshes of ``tarball`` (extracted to
    WORK/extra_meshes, prepared into WORK/data_extra with nothing held out), linked, not copied. DATA's test
    split is kept as it is, so the held-out shapes (and their scans) are the same ones the other runs are
    measured on."""
    src = extract_once(tarball, work / "extra_meshes")
    extra = work / "data_extra"
    plus = work / "data_plus"
    if (plus / formats.MANIFEST).is_file():
        return plus
    # always run: prep rewrites its manifest while it works and reuses what a killed run finished, so a
    # manifest alone does not mean the folder is complete
    sh("prep", "meshes", src, "--out", extra, "--samples", 250_000, "--test-fraction", 0, "--workers", 2,
       "--quiet")
    base, more = DataRoot(data), DataRoot(extra)
    for sub in (formats.SDF_DIR, formats.SURFACE_DIR, formats.NORM_DIR, formats.SCANS_DIR):
        for root in (base.root, more.root):
            for f in sorted((root / sub).glob("*/*")):
                link = plus / sub / f.parent.name / f.name
                if link.exists():
                    raise SystemExit(f"{f}: the same shape is in both {data} and {extra}")
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(f.resolve())
    train: dict[str, list[str]] = {}
    for ref in base.shapes("train") + more.shapes("train"):
        train.setdefault(ref.category, []).append(ref.id)
    formats.write_split(plus / formats.SPLITS_DIR / "train.json", train)
    test: dict[str, list[str]] = {}
    for ref in base.shapes("test"):
        test.setdefault(ref.category, []).append(ref.id)
    formats.write_split(plus / formats.SPLITS_DIR / "test.json", test)
    manifest = base.manifest()
    manifest["meshes"] = manifest.get("meshes", []) + more.manifest().get("meshes", [])
    manifest["source"] = f"{manifest.get('source')} + {src}"
    formats.write_json(plus / formats.MANIFEST, manifest)
    return plus


def equal_steps_args(data: Path, plus: Path) -> list[str]:
    """``train`` flags that give a run on ``plus`` the preset's number of decoder steps (so the same time) and
    the same schedules relative to the run: the epochs, the code-regulariser ramp and the checkpoints scaled
    down by the ratio of training shapes."""
    from deepsdf_ad.config import load_config

    cfg = load_config("shapes_cpu")
    ratio = len(DataRoot(data).shapes("train")) / len(DataRoot(plus).shapes("train"))
    epochs = max(1, round(cfg.train.epochs * ratio))
    every = max(1, round(cfg.train.checkpoint_every * ratio))
    return ["--epochs", str(epochs), "--set",
            f"train.code_reg_rampup={max(1, round(cfg.train.code_reg_rampup * ratio))}", "--set",
            f"train.checkpoint_every={every}"]


def nearest_records(data: Path, train_data: Path, limit: int | None) -> list[dict]:
    """The nearest-training-shape baseline on DATA's held-out scans: for each, the training shape of
    ``train_data`` (DATA itself, or the ``ad+`` run's data with the extra shapes) whose surface lies closest
    to the scan points (no ground truth used), returned as it is and measured against the truth."""
    root, train_root = DataRoot(data), DataRoot(train_data)
    truth, train_truth = Truth3D(root), Truth3D(train_root)
    train_refs = train_root.shapes("train")
    train_surf = [train_truth.surface(r)[0] for r in train_refs]
    out = []
    for ref in select(root.shapes("test"), limit):
        true_pts, true_n = truth.surface(ref)
        k, _ = nearest_shape(scan_in_frame(root, ref)[0], train_surf)
        near_pts, near_n = train_truth.surface(train_refs[k])
        m = surface_metrics(near_pts, near_n, true_pts, true_n)
        out.append({"key": ref.key, "category": ref.category, "id": ref.id, **_pick(m),
                    "nearest": train_refs[k].key})
    return out


def baseline_records(data: Path, limit: int | None) -> dict[str, list[dict]]:
    """Per-shape metrics of the three baselines on the held-out scans."""
    root = DataRoot(data)
    truth = Truth3D(root)
    out: dict[str, list[dict]] = {"scan alone": [], "Poisson": [],
                                  "nearest training shape": nearest_records(data, data, limit)}
    for ref in select(root.shapes("test"), limit):
        true_pts, true_n = truth.surface(ref)
        pts, normals, _ = scan_in_frame(root, ref)
        base = {"key": ref.key, "category": ref.category, "id": ref.id}
        # the scan itself: its points against the truth
        m = surface_metrics(pts, None, true_pts, true_n)
        out["scan alone"].append({**base, **_pick(m)})
        # Poisson of the scan, with the scan's normals oriented to the camera
        mesh = poisson_mesh(pts, normals)
        out["Poisson"].append({**base, **_mesh_metrics(mesh, true_pts, true_n)})
    return out


def _pick(m: dict) -> dict:
    out = {"chamfer_x1e3": m["chamfer"] * 1e3, "fscore": m["fscore"]}
    if "normal_consistency" in m:
        out["normal_consistency"] = m["normal_consistency"]
    return out


def _mesh_metrics(mesh, true_pts, true_n) -> dict:
    if mesh is None or len(mesh.faces) == 0:
        return {"failed": "empty mesh"}
    pts, normals = surface_points_normals(mesh, len(true_pts), 0)
    return _pick(surface_metrics(pts, normals, true_pts, true_n))


def section_records(work: Path, runs: dict[str, Path], data: Path, section: str, resolution: int,
                    limit: int | None, fresh: bool, ae_limit: int | None = None,
                    plus: Path | None = None) -> dict[str, list[dict]]:
    """{method label: per-shape records} of one section; each method's records are cached on their own in
    WORK/results/<section>_<resolution>_<limit>_<method>.json (so methods can be run in separate
    processes). ``plus``: the ``ad+`` run's data (the completion section then also has the nearest shape
    among its training shapes)."""
    split, inp = SPLIT_INPUT[section]
    out = {}

    def cached(label: str, compute, limit: int | None = limit) -> list[dict]:
        slug = "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")
        cache = work / "results" / f"{section}_{resolution}_{limit or 'all'}_{slug}.json"
        if cache.is_file() and not fresh:
            return json.loads(cache.read_text())
        t0 = time.perf_counter()
        rows = compute()
        formats.write_json(cache, rows)
        print(f"  {SECTION_TITLES[section]}: {label}: {len(rows)} shapes in {time.perf_counter() - t0:.0f} s",
              flush=True)
        return rows

    for label, run, mode in METHODS[section]:
        if run in runs:
            lim = ae_limit if run == "ae" and ae_limit else limit
            out[label] = cached(label, lambda run=run, mode=mode, lim=lim: evaluate_run(
                runs[run], data,
                EvalOptions(split=split, input=inp, mode=mode, resolution=resolution, limit=lim),
                device="auto", progress=False)["shapes"], lim)
    if section == "scan":
        baselines: dict[str, list[dict]] = {}  # computed together, once, when the first one is not cached

        def baseline(label: str) -> list[dict]:
            if not baselines:
                baselines.update(baseline_records(data, limit))
            return baselines[label]

        for label in ("scan alone", "Poisson", "nearest training shape"):
            out[label] = cached(label, lambda label=label: baseline(label))
        if plus is not None:
            out[NEAREST_PLUS] = cached(NEAREST_PLUS, lambda: nearest_records(data, plus, limit))
    return out


def worst_case(records: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Failures (and records without a finite chamfer) scored as the section's worst chamfer (over every
    method and shape), F-score 0, normal consistency 0 (:func:`deepsdf_ad.compare.score_failed`); the
    ``failed`` flag stays so the table can count them."""
    marked = {label: [r if math.isfinite(r.get("chamfer_x1e3", math.nan))
                      else {**r, "failed": r.get("failed", "no chamfer")} for r in rows]
              for label, rows in records.items()}
    return score_failed(marked, ["chamfer_x1e3", "fscore", "normal_consistency"])


def table(records: dict[str, list[dict]], title: str) -> list[str]:
    cats = sorted({r["category"] for rows in records.values() for r in rows})
    lines = [f"### {title}", "",
             "| category | method | n | failed | chamfer x1e3 mean | median | F-score@1% | "
             "normal consistency |", "|---|---|---|---|---|---|---|---|"]
    for cat in [*cats, "all"]:
        for label, rows in records.items():
            sel = [r for r in rows if cat == "all" or r["category"] == cat]
            if not sel:
                continue
            cd = np.array([r["chamfer_x1e3"] for r in sel])
            fs = np.mean([r.get("fscore", 0.0) for r in sel])
            nc = [r["normal_consistency"] for r in sel if "normal_consistency" in r]
            lines.append(f"| {cat} | {label} | {len(sel)} | {sum('failed' in r for r in sel)} | "
                         f"{cd.mean():.2f} | {np.median(cd):.2f} | {fs:.3f} | "
                         f"{np.mean(nc) if nc else float('nan'):.3f} |")
    return lines + [""]


def paired_tests(records: dict[str, list[dict]], method: str, others: list[str]) -> list[str]:
    """Wilcoxon signed-rank tests of ``method``'s chamfer against each of ``others``, paired by shape."""
    from scipy.stats import wilcoxon

    lines = []
    a = {r["key"]: r["chamfer_x1e3"] for r in records.get(method, [])}
    for o in others:
        b = {r["key"]: r["chamfer_x1e3"] for r in records.get(o, [])}
        keys = sorted(set(a) & set(b))
        if len(keys) < 10:
            lines.append(f"- {method} vs {o}: n = {len(keys)} < 10, no verdict")
            continue
        x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
        p = float(wilcoxon(x, y).pvalue)
        wins = int((x < y).sum())
        verdict = ("lower (p < 0.05)" if p < 0.05 and np.median(x - y) < 0 else
                   "higher (p < 0.05)" if p < 0.05 else "no significant difference")
        lines.append(f"- {method} vs {o}: n = {len(keys)}, lower on {wins}, median difference "
                     f"{np.median(x - y):+.2f}, Wilcoxon p = {p:.3g}: {method} {verdict}")
    return lines


def run_minutes(run: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return np.array([r["epoch"] for r in rows]), np.cumsum([r["seconds"] for r in rows]) / 60.0


def snapshot(run: Path, entry: dict, dest: Path) -> Path:
    """A run folder holding only checkpoint ``entry`` of ``run`` (so every command sees that state)."""
    import shutil

    from deepsdf_ad.runs import Run, load_trained

    if (dest / "latent_codes.safetensors").is_file():
        return dest
    (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "shapes.json"):
        shutil.copy(run / name, dest / name)
    for suffix in (".safetensors", ".json"):
        stem = Path(entry["file"]).stem
        shutil.copy(run / "checkpoints" / f"{stem}{suffix}", dest / "checkpoints" / f"{stem}{suffix}")
    r = Run(dest)
    _, model = load_trained(r, torch.device("cpu"))
    r.save_codes(model.latent.all_codes().cpu(), r.shapes()["keys"])
    return dest


def curve(work: Path, runs: dict[str, Path], data: Path, limit: int, resolution: int,
          fresh: bool) -> list[dict]:
    """Representation and completion medians at checkpoints near 1/6, 1/3, 2/3 and all of each run."""
    from deepsdf_ad.runs import Run

    points = []
    for name, run in runs.items():
        r = Run(run)
        entries, every = r.checkpoints(), r.config().train.checkpoint_every
        epochs, minutes = run_minutes(run)
        total = r.config().train.epochs
        for frac in (1 / 6, 1 / 3, 2 / 3, 1.0):
            want = min(total, max(every, round(frac * total / every) * every))  # the checkpoint nearest frac
            entry = next((e for e in entries if e["epoch"] == want), None)
            if entry is None:
                print(f"  curve: {name}: no checkpoint at epoch {want} (yet)", flush=True)
                continue
            snap = snapshot(run, entry, work / "curve" / f"{name}_epoch{entry['epoch']}")
            cache = work / "results" / f"curve_{name}_{entry['epoch']}_{resolution}_{limit}.json"
            if cache.is_file() and not fresh:
                points.append(json.loads(cache.read_text()))
                continue
            row = {"run": name, "epoch": entry["epoch"],
                   "minutes": float(minutes[np.searchsorted(epochs, entry["epoch"])])}
            ad = name.startswith("ad")
            for section, mode in (("repr", None if ad else "encode"),
                                  ("scan", "optimise" if ad else "encode")):
                split, inp = SPLIT_INPUT[section]
                res = evaluate_run(snap, data,
                                   EvalOptions(split=split, input=inp, mode=mode, resolution=resolution,
                                                            limit=limit), device="auto", progress=False)
                cd = [r.get("chamfer_x1e3",
                            math.inf) if "failed" not in r else math.inf for r in res["shapes"]]
                row[f"{section}_median"] = float(np.median(cd))
                row[f"{section}_failed"] = sum("failed" in r for r in res["shapes"])
            formats.write_json(cache, row)
            print(f"  curve: {row}", flush=True)
            points.append(row)
    return points


def draw_curve(points: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, title in ((axes[0], "repr_median", "training shapes (representation)"),
                           (axes[1], "scan_median", "held-out, from one scan")):
        for name, label in (("ad", "autodecoder"), ("ae", "autoencoder (encode)"),
                            ("ad+", "autodecoder, + extra shapes")):
            pts = sorted((p["minutes"], p[key]) for p in points if p["run"] == name)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax.set_xlabel("training minutes (as measured in the run)")
        ax.set_ylabel("median chamfer x1e3")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def figures(work: Path, runs: dict[str, Path], data: Path, records: dict[str, list[dict]],
            resolution: int) -> list[Path]:
    """One picture per category: the scan, AD, AE and the truth, each panel labelled with its chamfer, for the
    held-out shape whose AD chamfer is the category's median."""
    from deepsdf_ad.meshing import mesh_sdf, model_sdf
    from deepsdf_ad.runs import Run, load_trained
    from deepsdf_ad.viz.render import render_to_array, save_image

    root = DataRoot(data)
    truth = Truth3D(root)
    dev = torch.device("cpu")
    ad = records.get("AD (optimise)", [])
    paths = []
    for cat in sorted({r["category"] for r in ad}):
        rows = sorted((r for r in ad if r["category"] == cat), key=lambda r: r["chamfer_x1e3"])
        pick = rows[len(rows) // 2]
        ref = next(r for r in root.shapes("test") if r.key == pick["key"])
        pts = scan_in_frame(root, ref)[0]
        panels, labels = [pts], [f"scan ({_cd(records, 'scan alone', ref.key)})"]
        for label, name, mode in (("AD", "ad", "optimise"), ("AE", "ae", "encode")):
            if name not in runs:
                continue
            _, model = load_trained(Run(runs[name]), dev)
            code = _code_for(runs[name], data, ref, mode)
            try:
                mesh = mesh_sdf(model_sdf(model, code, dev), resolution)
            except Exception:  # an empty field: an empty panel
                mesh = np.zeros((1, 3))
            panels.append(mesh)
            full = "AD (optimise)" if name == "ad" else "AE (encode)"
            labels.append(f"{label} ({_cd(records, full, ref.key)})")
        panels.append(truth.surface(ref)[0])
        labels.append(f"truth {ref.key}")
        img = render_to_array(panels, size=(280 * len(panels), 320), labels=labels, layout="row",
                              renderer="raycast")
        out = work / f"quality_{cat}.png"
        save_image(img, out)
        paths.append(out)
    return paths


_CODES: dict = {}


def _code_for(run: Path, data: Path, ref, mode: str) -> torch.Tensor:
    """The code the completion section found for ``ref`` (recomputed: the same seed gives the same code)."""
    from deepsdf_ad.evaluate import find_shape_codes
    from deepsdf_ad.runs import Run, load_trained

    key = (str(run), ref.key, mode)
    if key not in _CODES:
        r = Run(run)
        cfg, model = load_trained(r, torch.device("cpu"))
        codes, _, _ = find_shape_codes(r, cfg, model, DataRoot(data), [ref],
                                       EvalOptions(split="test", input="scan", mode=mode),
                                       torch.device("cpu"), progress=False)
        _CODES[key] = codes[0]
    return _CODES[key]


def _cd(records: dict, label: str, key: str) -> str:
    for r in records.get(label, []):
        if r["key"] == key:
            return "failed" if "failed" in r else f"CD {r['chamfer_x1e3']:.2f}"
    return "-"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/bench_quality", help="folder for data, runs and results")
    ap.add_argument("--meshes", default=str(SHARED / "meshes"), help="the shared meshes (category/id.off)")
    ap.add_argument("--data", help="a prepared data root (default: WORK/data, prepared here)")
    ap.add_argument("--ad-run", help="a trained shapes_cpu run (default: WORK/runs/shapes_cpu, trained here)")
    ap.add_argument("--ae-run", help="a trained shapes_cpu_ae run (default: WORK/runs/shapes_cpu_ae)")
    ap.add_argument("--only", nargs="+", choices=("repr", "full", "scan", "curve", "figures"),
                    default=["repr", "full", "scan", "curve", "figures"])
    ap.add_argument("--resolution", type=int, default=256, help="marching-cubes grid of the tables")
    ap.add_argument("--limit", type=int, help="at most N shapes per category per section")
    ap.add_argument("--ae-limit", type=int,
                    help="at most N held-out shapes per category for the autoencoder's methods (default: "
                         "--limit); paired tests use the shapes both have")
    ap.add_argument("--repr-limit", type=int,
                    help="at most N training shapes per category in the representation section "
                         "(default: --limit)")
    ap.add_argument("--curve-limit", type=int, default=4, help="shapes per category at each curve point")
    ap.add_argument("--curve-resolution", type=int, default=128)
    ap.add_argument("--extra", nargs="?", const=str(SHARED / "modelnet10_train_extra.tar.xz"), metavar="TAR",
                    help="also train the autodecoder on the extra training meshes of TAR (default: the "
                         "shared modelnet10_train_extra.tar.xz) for the same number of decoder steps, as run "
                         "'ad+', measured on the same held-out shapes: more shapes against more updates per "
                         "shape")
    ap.add_argument("--fresh", action="store_true", help="recompute cached sections")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    if args.data is None and not Path(args.meshes).is_dir():
        print(f"skipped: {args.meshes} not found (the shared data is not beside this checkout)")
        return 0
    data = Path(args.data) if args.data else prepare(work, Path(args.meshes))
    runs = {"ad": Path(args.ad_run) if args.ad_run else train_preset(work, data, "shapes_cpu")}
    if args.ae_run != "none":
        runs["ae"] = Path(args.ae_run) if args.ae_run else train_preset(work, data, "shapes_cpu_ae")
    plus = None
    if args.extra:
        plus = extra_data(work, data, Path(args.extra))
        runs["ad+"] = train_preset(work, plus, "shapes_cpu", "shapes_cpu_plus", *equal_steps_args(data, plus))
    report = [f"# bench_quality: {', '.join(f'{k} = {v}' for k, v in runs.items())}; data {data}; "
              f"mesh resolution {args.resolution}", ""]
    for name, run in runs.items():
        epochs, minutes = run_minutes(run)
        report.append(f"- {name}: {int(epochs[-1])} epochs in {minutes[-1]:.1f} training minutes (as "
                      f"measured)")
    report.append("")
    scan_records = None
    for section in ("repr", "full", "scan"):
        if section not in args.only:
            continue
        limit = args.repr_limit if section == "repr" and args.repr_limit else args.limit
        recs = worst_case(section_records(work, runs, data, section, args.resolution, limit, args.fresh,
                                          args.ae_limit, plus))
        report += table(recs, SECTION_TITLES[section])
        if section == "scan":
            scan_records = recs
            more = [NEAREST_PLUS] if NEAREST_PLUS in recs else []
            report += ["Paired tests (all held-out shapes):", *paired_tests(
                recs, "AD (optimise)",
                ["scan alone", "Poisson", "nearest training shape", *more, "AE (encode)"]),
                *(paired_tests(recs, "AD+ (optimise)",
                               ["AD (optimise)", "scan alone", "nearest training shape", NEAREST_PLUS])
                  if "ad+" in runs else []),
                *paired_tests(recs, "AE (encode+refine)", ["AD (optimise)"]), ""]
        if section == "full":
            report += ["Paired tests:",
                       *paired_tests(recs, "AD (optimise)", ["AE (encode)", "AE (encode+refine)"]), ""]
    if "curve" in args.only:
        pts = curve(work, runs, data, args.curve_limit, args.curve_resolution, args.fresh)
        draw_curve(pts, work / "quality_curve.png")
        report += ["### quality vs training minutes (median chamfer x1e3, "
                   f"{args.curve_limit} shapes per category, {args.curve_resolution}^3)", "",
                   "| run | epoch | minutes | representation | completion (1 scan) |",
                   "|---|---|---|---|---|"]
        report += [f"| {p['run']} | {p['epoch']} | {p['minutes']:.1f} | {p['repr_median']:.2f} | "
                   f"{p['scan_median']:.2f} |" for p in pts]
        report += ["", f"curve: {work / 'quality_curve.png'}", ""]
    if "figures" in args.only and scan_records is not None:
        for p in figures(work, runs, data, scan_records, args.curve_resolution):
            report.append(f"figure: {p}")
    text = "\n".join(report)
    formats.write_text_atomic(work / "quality.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
