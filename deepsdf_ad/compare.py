"""``deepsdf-ad compare``: runs of several methods (each one run or a folder of ``seed_K`` runs) measured on
the same shapes, with the same conventions, into ``REPORT_DIR/report.md`` and ``report.html``.

Sections: representation (train shapes), reconstruction of held-out shapes, completion from partial views,
out-of-distribution shapes (``--ood DATA2``), generation (codes from a Gaussian fitted to the training
codes; an interpolation), training curves. Each metric is reported per method and category as mean,
median and a bootstrap 95% interval of the mean (1,000 resamples of the shapes, seeds pooled).

Runs are compared only when they share what makes a comparison fair: the training data, the decoder,
the code length, the dimension, the shapes and samples per step and the epochs.
"""

from __future__ import annotations

import base64
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_prep import formats
from data_prep.formats import DataError, DataRoot
from deepsdf_ad.evaluate import LOWER_IS_BETTER, EvalOptions, evaluate_run
from deepsdf_ad.runs import Run

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
RESULTS_JSON = "results.json"
BOOTSTRAP = 1000
FIGURE_SHAPES = 4


@dataclass
class CompareOptions:
    """How much ``compare`` measures (sized by the caller; the experiment presets set these)."""

    limit: int | None = None
    """At most this many shapes per category in each section; None: all."""
    resolution: int | None = None
    """Grid points per axis for meshes and 2D fields (default: each run's ``mesh.resolution``)."""
    samples: int = 8
    """Generated shapes per method."""
    steps: int = 6
    """Shapes in the interpolation, both ends included."""
    sections: list[str] = field(default_factory=lambda: ["representation", "reconstruction", "completion", "ood",
                                                         "generation"])
    """Sections to include (the curves are always drawn)."""


SECTION_TITLES = {
    "representation": "Representation (training shapes)",
    "reconstruction": "Reconstruction of held-out shapes",
    "completion": "Completion from partial views",
    "ood": "Out-of-distribution shapes",
}


# ---- runs and fairness -------------------------------------------------------------------------------
def method_runs(path: str | os.PathLike) -> list[Run]:
    """A run folder, or a folder of seed runs ``seed_K`` (``train --seeds``): the runs of one method."""
    p = Path(path)
    if Run(p).exists():
        return [Run(p).require()]
    subs = sorted((q for q in p.glob("seed_*") if Run(q).exists()), key=lambda q: q.name)
    if not subs:
        raise DataError(f"{p}: neither a run folder nor a folder of seed_K runs; train it with 'deepsdf-ad train'")
    return [Run(q).require() for q in subs]


def fairness_items(run: Run) -> dict[str, object]:
    """What two runs must share to be compared, by config key."""
    cfg = run.config()
    shapes = run.shapes()
    return {"data": str(Path(shapes["data"]).resolve()), "train shapes": len(shapes["keys"]),
            "dim": cfg.dim, "model.decoder": asdict(cfg.model.decoder), "model.latent.size": cfg.model.latent.size,
            "train.shapes_per_batch": cfg.train.shapes_per_batch,
            "train.samples_per_shape": cfg.train.samples_per_shape, "train.epochs": cfg.train.epochs,
            "epochs trained": len(run.metrics())}


def check_fair(methods: dict[str, list[Run]], data: str | os.PathLike | None = None) -> None:
    """Raise :class:`DataError` (one line, listing every difference) unless all runs are comparable."""
    items = {f"{name}/{r.path.name}" if len(runs) > 1 else name: fairness_items(r)
             for name, runs in methods.items() for r in runs}
    first = next(iter(items.values()))
    diffs = []
    for key in first:
        values = {label: it[key] for label, it in items.items()}
        if len({repr(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{label}: {_short(v)}" for label, v in values.items())
            diffs.append(f"{key} differs ({shown})")
    if diffs:
        raise DataError("runs are not comparable: " + "; ".join(diffs))
    if data is not None and str(Path(data).resolve()) != first["data"]:
        raise DataError(f"runs are not comparable with {data}: they were trained on {first['data']}")


def _short(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_short(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


# ---- statistics ----------------------------------------------------------------------------------------
def bootstrap_interval(values: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over ``n`` resamples with replacement."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return (float(v.mean()), float(v.mean())) if len(v) else (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n, len(v)))
    means = v[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def metric_stats(records: list[dict], metric: str) -> dict | None:
    v = np.array([r[metric] for r in records if r.get(metric) is not None and math.isfinite(r[metric])])
    if len(v) == 0:
        return None
    lo, hi = bootstrap_interval(v)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "ci95": [lo, hi], "n": int(len(v))}


def table_stats(records: list[dict], metrics: list[str]) -> dict:
    """Stats per category and over all shapes: {"all" | category: {metric: stats}}."""
    groups = {"all": records}
    cats = sorted({r["category"] for r in records})
    if len(cats) > 1:
        groups.update({c: [r for r in records if r["category"] == c] for c in cats})
    return {g: {"shapes": len(rows), "failed": sum(1 for r in rows if "failed" in r),
                **{m: metric_stats(rows, m) for m in metrics}} for g, rows in groups.items()}


def parameter_counts(run: Run) -> dict[str, int]:
    from deepsdf_ad.train import load_trained

    _, model = load_trained(run, torch.device("cpu"))
    return {"decoder": sum(p.numel() for p in model.decoder.parameters()),
            "latent": sum(p.numel() for p in model.latent.parameters())}


# ---- figures -------------------------------------------------------------------------------------------
def _decode_picture(model, cfg, code, resolution: int, device) -> np.ndarray:
    from deepsdf_ad.meshing import evaluate_grid, field_kind, field_picture, model_sdf

    return field_picture(evaluate_grid(model_sdf(model, code, device, cfg.mesh.batch_points), resolution, 2),
                         field_kind(cfg))


def _decode_mesh(model, cfg, code, resolution: int, device):
    from deepsdf_ad.meshing import mesh_sdf, model_sdf

    try:
        return mesh_sdf(model_sdf(model, code, device, cfg.mesh.batch_points), resolution)
    except DataError:
        return None


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    pic = Image.new("RGB", (img.shape[1], img.shape[0] + 16), (255, 255, 255))
    pic.paste(Image.fromarray(img), (0, 16))
    ImageDraw.Draw(pic).text((3, 2), text[:max(4, img.shape[1] // 6)], fill=(0, 0, 0))
    return np.asarray(pic)


def _stack_rows(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, gap), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded)[:-gap]


def _placeholder(h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 235, np.uint8)
    img[np.arange(min(h, w)), np.arange(min(h, w)) * w // max(min(h, w), 1)] = (200, 40, 40)
    return img


def section_figure(section: dict, loaded: dict, data_root: DataRoot, resolution: int | None, device) -> np.ndarray:
    """Ground truth beside each method for the first shapes of a section: one row per shape."""
    first = next(iter(section["methods"].values()))[0]
    keys = [r["key"] for r in first["shapes"]][:FIGURE_SHAPES]
    names = list(section["methods"])
    dim = first["dim"]
    rows = []
    for key in keys:
        cat, sid = key.split("/", 1)
        ref = data_root.shape(cat, sid)
        if dim == 2:
            from deepsdf_ad.evaluate import Truth2D
            from deepsdf_ad.meshing import field_kind, field_picture, grid_points

            cfg0 = loaded[names[0]][1]
            res = resolution or cfg0.mesh.resolution
            truth = Truth2D(data_root, field_kind(cfg0)).field(ref, grid_points(res, 2)).reshape(res, res)
            cells = [_label(field_picture(truth, field_kind(cfg0)), "truth")]
            for name in names:
                ev = section["methods"][name][0]
                i = [r["key"] for r in ev["shapes"]].index(key)
                _, cfg, model = loaded[name]
                cells.append(_label(_decode_picture(model, cfg, ev["codes"][i], res, device), name))
            from deepsdf_ad.meshing import picture_grid

            rows.append(picture_grid(cells, len(cells)))
        else:
            from viz.render import render_to_array

            inputs, labels = [formats.load_points(ref.surface).points], ["truth"]
            for name in names:
                ev = section["methods"][name][0]
                i = [r["key"] for r in ev["shapes"]].index(key)
                _, cfg, model = loaded[name]
                mesh = _decode_mesh(model, cfg, ev["codes"][i], resolution or cfg.mesh.resolution, device)
                inputs.append(mesh if mesh is not None else np.zeros((1, 3)))
                labels.append(name if mesh is not None else f"{name} (empty)")
            rows.append(render_to_array(inputs, size=(220 * len(inputs), 220), labels=labels, point_size=2.0))
    return _stack_rows(rows)


def generation_figure(loaded: dict, opts: CompareOptions, device) -> tuple[np.ndarray, dict]:
    """Per method: ``opts.samples`` shapes from the Gaussian of its training codes, then an interpolation
    between its first two training shapes. Returns the picture and, per method, how many were non-empty."""
    from deepsdf_ad.generate import interpolate_codes, sample_codes

    rows, info = [], {}
    for name, (_run, cfg, model) in loaded.items():
        table = model.latent.all_codes().cpu()
        codes = torch.cat([sample_codes(table, opts.samples, np.random.default_rng(0)),
                           interpolate_codes(table[0], table[min(1, len(table) - 1)], opts.steps)])
        res = opts.resolution or cfg.mesh.resolution
        if cfg.dim == 2:
            from deepsdf_ad.meshing import picture_grid

            pics = [_decode_picture(model, cfg, c, res, device) for c in codes]
            row = _label(picture_grid(pics, len(pics)), f"{name}: {opts.samples} samples | interpolation")
            info[name] = {"samples": opts.samples}
        else:
            from viz.render import render_to_array

            meshes = [_decode_mesh(model, cfg, c, res, device) for c in codes]
            ok = [m if m is not None else np.zeros((1, 3)) for m in meshes]
            labels = [f"sample {k}" for k in range(opts.samples)] + [f"t={t:.2f}" for t in
                                                                      np.linspace(0, 1, opts.steps)]
            row = _label(render_to_array(ok, size=(160 * len(ok), 170), labels=labels), name)
            info[name] = {"samples": opts.samples, "non_empty": int(sum(m is not None for m in meshes[:opts.samples]))}
        rows.append(row)
    return _stack_rows(rows), info


# ---- report --------------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    a = abs(v)
    return f"{v:.3g}" if a >= 100 or a == 0 else (f"{v:.4f}" if a < 1 else f"{v:.3f}")


def stats_table(rows: list[tuple[str, dict]], metrics: list[str]) -> list[str]:
    """Markdown table: one row per (label, stats), cells 'mean / median [ci]'."""
    arrows = {m: " (lower better)" if m in LOWER_IS_BETTER else " (higher better)" for m in metrics}
    head = "| method | category | shapes | " + " | ".join(f"{m}{arrows[m]}" for m in metrics) + " |"
    out = [head, "|" + "---|" * (3 + len(metrics))]
    for label, per_group in rows:
        for group, st in per_group.items():
            cells = []
            for m in metrics:
                s = st.get(m)
                cells.append("-" if s is None else f"{_fmt(s['mean'])} / {_fmt(s['median'])} "
                                                   f"[{_fmt(s['ci95'][0])}, {_fmt(s['ci95'][1])}]")
            failed = f" ({st['failed']} failed)" if st["failed"] else ""
            out.append(f"| {label} | {group} | {st['shapes']}{failed} | " + " | ".join(cells) + " |")
    return out


def md_to_html(md: str, images: dict[str, Path]) -> str:
    """A small Markdown subset (headings, tables, paragraphs, images) as self-contained HTML."""
    import html

    lines, out, table = md.splitlines(), [], []

    def flush_table():
        if not table:
            return
        out.append("<table>")
        for k, row in enumerate(r for r in table if not set(r.replace("|", "").strip()) <= {"-"}):
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            tag = "th" if k == 0 else "td"
            out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
        out.append("</table>")
        table.clear()

    for line in lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            name = line[line.index("](") + 2:line.rindex(")")]
            data = base64.b64encode(images[name].read_bytes()).decode() if name in images else ""
            out.append(f'<p><img alt="{html.escape(name)}" style="max-width:100%" '
                       f'src="data:image/png;base64,{data}"></p>')
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#eee}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>deepsdf-ad comparison</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def compare(runs: list[str | os.PathLike], data: str | os.PathLike, out: str | os.PathLike,
            ood: str | os.PathLike | None = None, opts: CompareOptions | None = None, device: str = "auto",
            progress: bool = True) -> dict:
    """Measure the methods ``runs`` (run folders or folders of seed runs) on ``data`` and write the report.

    Returns the results (also written to ``REPORT_DIR/results.json``).
    """
    from deepsdf_ad.train import load_trained, resolve_device
    from viz.plots import plot_runs
    from viz.render import save_image

    opts = opts or CompareOptions()
    t0 = time.perf_counter()
    if len(runs) < 1:
        raise DataError("compare needs at least one run")
    names = [Path(r).name or str(r) for r in runs]
    if len(set(names)) != len(names):
        names = [str(r) for r in runs]
    methods = {n: method_runs(r) for n, r in zip(names, runs, strict=True)}
    check_fair(methods, data)
    dev = resolve_device(device)
    root = DataRoot(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg0 = methods[names[0]][0].config()
    dim = cfg0.dim
    metrics = ["chamfer_x1e3", "chamfer_l1", "fscore", "normal_consistency", "iou"] if dim == 3 else \
        ["iou", "near_contour_error"]
    timing = ["code_seconds", "mesh_seconds"]

    plan = []
    if "representation" in opts.sections:
        plan.append(("representation", root, "train", "full"))
    if "reconstruction" in opts.sections:
        plan.append(("reconstruction", root, "test", "full"))
    has_scans = dim == 2 or (root.root / formats.SCANS_DIR).is_dir()
    if "completion" in opts.sections and has_scans:
        plan.append(("completion", root, "test", "scan"))
    if "ood" in opts.sections and ood is not None:
        plan.append(("ood", DataRoot(ood), "test", "full"))

    results: dict = {"data": str(root.root), "ood": None if ood is None else str(ood), "dim": dim,
                     "methods": {}, "sections": {}, "fair": fairness_items(methods[names[0]][0])}
    for name, rs in methods.items():
        train_s = [sum(r.get("seconds", 0.0) for r in run.metrics()) for run in rs]
        results["methods"][name] = {"runs": [str(r.path) for r in rs], "latent_source": rs[0].config().model.latent.source,
                                    "parameters": parameter_counts(rs[0]),
                                    "train_seconds_mean": float(np.mean(train_s)), "seeds": len(rs)}
    loaded = {name: (rs[0], *load_trained(rs[0], dev)) for name, rs in methods.items()}
    figures: dict[str, Path] = {}
    md = [f"# Autodecoder vs autoencoder: {', '.join(names)}", "",
          f"Data: `{root.root}`" + (f"; out-of-distribution data: `{ood}`" if ood else "") + ".",
          "Each cell: mean / median [bootstrap 95% interval of the mean]; seeds pooled. Conventions: see "
          "`deepsdf_ad/metrics.py` (DeepSDF chamfer x1e3 in the unit-sphere frame; chamfer-L1, F-score at 1%, "
          "normal consistency in ONet's unit cube; IoU of the inside).", ""]
    md += ["## Methods", "", "| method | latent source | seeds | decoder parameters | latent parameters | "
           "training seconds (mean per seed) | inference seconds per shape (code + mesh, held-out) |",
           "|---|---|---|---|---|---|---|"]
    section_tables = []
    for sec, sroot, split, inp in plan:
        sec_res: dict = {"title": SECTION_TITLES[sec], "split": split, "input": inp, "data": str(sroot.root),
                         "methods": {}}
        evs_by_method = {}
        for name, rs in methods.items():
            evs = []
            for run in tqdm(rs, desc=f"{sec}: {name}", unit="run", disable=not progress or len(rs) < 2):
                evs.append(evaluate_run(run.path, sroot.root, EvalOptions(split=split, input=inp,
                                                                          resolution=opts.resolution,
                                                                          limit=opts.limit),
                                        device=device, progress=progress, keep_codes=True))
            evs_by_method[name] = evs
            pooled = [r for ev in evs for r in ev["shapes"]]
            sec_res["methods"][name] = {"mode": evs[0]["mode"], "stats": table_stats(pooled, metrics + timing)}
        fig = out / f"{sec}.png"
        save_image(section_figure({"methods": evs_by_method}, loaded, sroot, opts.resolution, dev), fig)
        figures[fig.name] = fig
        results["sections"][sec] = sec_res
        rows = [(f"{n} ({sec_res['methods'][n]['mode']})", sec_res["methods"][n]["stats"]) for n in names]
        section_tables += [f"## {SECTION_TITLES[sec]}", "",
                           f"`{sroot.root}`, {split} split, {inp} input.", ""]
        section_tables += stats_table(rows, metrics) + [""]
        section_tables += ["Seconds per shape:", ""] + stats_table(rows, timing) + [""]
        section_tables += [f"![{fig.name}]({fig.name})", "", "Ground truth, then each method.", ""]
    for name in names:
        m = results["methods"][name]
        rec = results["sections"].get("reconstruction", {}).get("methods", {}).get(name, {}).get("stats", {})
        inf = "-"
        if rec.get("all", {}).get("code_seconds"):
            inf = _fmt(rec["all"]["code_seconds"]["mean"] + rec["all"]["mesh_seconds"]["mean"])
        m["inference_seconds_per_shape"] = None if inf == "-" else float(inf)
        md.append(f"| {name} | {m['latent_source']} | {m['seeds']} | {m['parameters']['decoder']:,} | "
                  f"{m['parameters']['latent']:,} | {m['train_seconds_mean']:.0f} | {inf} |")
    md += [""] + section_tables
    if "generation" in opts.sections:
        img, info = generation_figure(loaded, opts, dev)
        fig = out / "generation.png"
        save_image(img, fig)
        figures[fig.name] = fig
        results["generation"] = info
        md += ["## Generation", "", f"Per method: {opts.samples} codes drawn from a Gaussian fitted to its training "
               f"codes, then {opts.steps} codes on the line between its first two training shapes.", "",
               f"![{fig.name}]({fig.name})", ""]
    curves = plot_runs([r.path for rs in methods.values() for r in rs], out / "curves.png")
    figures[curves.name] = curves
    md += ["## Training curves", "", f"![{curves.name}]({curves.name})", ""]
    fair = results["fair"]
    md += ["## Fairness", "", "Checked equal for every run: " + ", ".join(f"{k} = {_short(v)}" for k, v in fair.items()
                                                                         if k != "data") + ".", ""]
    results["seconds"] = round(time.perf_counter() - t0, 1)
    text = "\n".join(md)
    formats.write_text_atomic(out / REPORT_MD, text)
    formats.write_text_atomic(out / REPORT_HTML, md_to_html(text, figures))
    formats.write_json(out / RESULTS_JSON, results)
    return results
