"""The comparison report: figures (rendered headless) and ``report.md`` / ``report.html`` from the results of
:func:`deepsdf_ad.compare.compare` (passed to it as ``report=write_report``).

Figures: for each section, ground truth beside each method for its first shapes (2D: the field with its
contour, :func:`deepsdf_ad.meshing.field_picture`; 3D: :func:`deepsdf_ad.viz.render.render_to_array`, ray
cast, the truth as its source mesh in the normalised frame, else its surface points); generation (samples from
each method's Gaussian of training codes and an interpolation); training curves
(:func:`deepsdf_ad.viz.plots.plot_runs`). ``report.html`` embeds the figures (base64), so it
stands alone; ``report.md`` links them beside it.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np
import torch

from deepsdf_ad.compare import SECTION_TITLES, CompareOptions, Comparison, _short
from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError, DataRoot
from deepsdf_ad.evaluate import LOWER_IS_BETTER, Truth3D

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURE_SHAPES = 4
_EMPTY = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.0, 0.01, 0.01]])
"""Stands in for a code whose field has no surface."""


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


def observed_points(data_root: DataRoot, ref, cfg) -> np.ndarray:
    """The points a completion section gave the methods for ``ref`` (the scan in 3D, the half contour in 2D),
    as :func:`deepsdf_ad.evaluate.scan_input` drew them (same per-shape seed)."""
    from deepsdf_ad.evaluate import EvalOptions, scan_input, shape_rng

    return scan_input(data_root, ref, cfg, shape_rng(EvalOptions().seed, ref.key))[1]


def points_picture(points: np.ndarray, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3): 2D points over [-1, 1]^2 (x right, y up) as dark dots on white."""
    img = np.full((size, size, 3), 255, np.uint8)
    p = np.asarray(points, float)[:, :2]
    col = np.clip(np.round((p[:, 0] + 1) / 2 * (size - 1)).astype(int), 0, size - 1)
    row = np.clip(np.round((1 - (p[:, 1] + 1) / 2) * (size - 1)).astype(int), 0, size - 1)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            img[np.clip(row + dr, 0, size - 1), np.clip(col + dc, 0, size - 1)] = (30, 30, 30)
    return img


CODE_LOSS_PNG = "code_optimisation.png"


def code_loss_figure(evaluations: dict, out: Path) -> Path | None:
    """Loss per step of the test-time code optimisation ({section: {method: [evaluation per run]}}, the
    first run's ``code_loss``), one panel per section with a curve; None when no method optimised."""
    panels = {sec: {name: evs[0].get("code_loss") for name, evs in methods.items() if evs[0].get("code_loss")}
              for sec, methods in evaluations.items()}
    panels = {sec: c for sec, c in panels.items() if c}
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (sec, cs) in zip(axes[0], panels.items(), strict=True):
        for name, c in cs.items():
            ax.plot(np.arange(1, len(c) + 1), c, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("loss (mean over shapes)")
        ax.set_title(SECTION_TITLES.get(sec, sec), fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with formats.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out


def panel_label(name: str, record: dict) -> str:
    """A figure panel's label: the method and the shape's own number (chamfer x10^3 in 3D, IoU in 2D)."""
    if record.get("chamfer_x1e3") is not None:
        return f"{name}: CD {record['chamfer_x1e3']:.3g}"
    if record.get("iou") is not None:
        return f"{name}: IoU {record['iou']:.2f}"
    return name


def figure_keys(keys: list[str], n: int) -> list[str]:
    """``n`` of the shape keys ('category/id'), taken in turn from each category (in order of first
    appearance), so a figure shows every category it can (every digit label, not the first label's shapes)."""
    by_cat: dict[str, list[str]] = {}
    for k in keys:
        by_cat.setdefault(k.split("/", 1)[0], []).append(k)
    out: list[str] = []
    depth = 0
    while len(out) < min(n, len(keys)):
        out += [ks[depth] for ks in by_cat.values() if depth < len(ks)][:n - len(out)]
        depth += 1
    return out


def section_figure(section: dict, loaded: dict, data_root: DataRoot, resolution: int | None,
                   device) -> np.ndarray:
    """Ground truth beside each method for a few shapes of a section, one per category in turn: one row per
    shape."""
    first = next(iter(section["methods"].values()))[0]
    keys = figure_keys([r["key"] for r in first["shapes"]], FIGURE_SHAPES)
    scan = section.get("input") == "scan"
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
            if scan:  # what the methods were given: the half contour, drawn as evaluate drew it
                cells.append(_label(points_picture(observed_points(data_root, ref, cfg0), 2 * res),
                                    "observed"))
            for name in names:
                ev = section["methods"][name][0]
                i = [r["key"] for r in ev["shapes"]].index(key)
                _, cfg, model = loaded[name]
                cells.append(_label(_decode_picture(model, cfg, ev["codes"][i], res, device),
                                    panel_label(name, ev["shapes"][i])))
            from deepsdf_ad.meshing import picture_grid

            rows.append(picture_grid(cells, len(cells)))
        else:
            from deepsdf_ad.viz.render import render_to_array

            truth = Truth3D(data_root).mesh(ref)  # the source mesh, lit as the methods' are; else its points
            inputs = [truth if truth is not None else formats.load_points(ref.surface).points]
            labels = ["truth"]
            if scan:  # what the methods were given
                inputs.append(observed_points(data_root, ref, loaded[names[0]][1]))
                labels.append("observed scan")
            for name in names:
                ev = section["methods"][name][0]
                i = [r["key"] for r in ev["shapes"]].index(key)
                _, cfg, model = loaded[name]
                mesh = _decode_mesh(model, cfg, ev["codes"][i], resolution or cfg.mesh.resolution, device)
                inputs.append(mesh if mesh is not None else _EMPTY)
                labels.append(panel_label(name, ev["shapes"][i]) if mesh is not None else f"{name} (empty)")
            # ray cast (open3d, a dependency): a CAD mesh's coplanar doubled faces stripe a depth buffer
            # (OpenGL), not a ray's first hit
            rows.append(render_to_array(inputs, size=(220 * len(inputs), 220), labels=labels, point_size=2.0,
                                        renderer="raycast"))
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
            from deepsdf_ad.viz.render import render_to_array

            meshes = [_decode_mesh(model, cfg, c, res, device) for c in codes]
            ok = [m if m is not None else _EMPTY for m in meshes]
            labels = [f"sample {k}" for k in range(opts.samples)] + [f"t={t:.2f}" for t in
                                                                      np.linspace(0, 1, opts.steps)]
            row = _label(render_to_array(ok, size=(160 * len(ok), 170), labels=labels), name)
            info[name] = {"samples": opts.samples,
                          "non_empty": int(sum(m is not None for m in meshes[:opts.samples]))}
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


def amortisation_line(name: str, objective: dict) -> str:
    """One line on the amortisation gap of ``name`` (:func:`deepsdf_ad.compare.refine_objective`)."""
    return (f"Amortisation gap of {name}, in the objective (data term of the test-time loss on all "
            "observations, "
            f"median over {objective['shapes']} shapes): {_fmt(objective['encoded']['median'])} at the "
            f"encoder's code, {_fmt(objective['refined']['median'])} after refining it (encode+refine); "
            f"lowered on {objective['lowered']} of {objective['shapes']}.")


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




def write_report(cmp: Comparison) -> dict[str, Path]:
    """Figures, ``report.md`` and ``report.html`` of a comparison in ``cmp.out``. Returns the figures."""
    from deepsdf_ad.viz.plots import plot_runs
    from deepsdf_ad.viz.render import save_image

    res, out, opts, metrics = cmp.results, cmp.out, cmp.opts, cmp.metrics
    names = list(res["methods"])
    timing = ["code_seconds", "mesh_seconds"]
    figures: dict[str, Path] = {}
    md = [f"# Autodecoder vs autoencoder: {', '.join(names)}", "",
          f"Data: `{res['data']}`"
          + (f"; out-of-distribution data: `{res['ood']}`" if res["ood"] else "") + ".",
          "Each cell: mean / median [bootstrap 95% interval of the mean, 1,000 resamples]; seeds pooled. "
          "Conventions (`deepsdf_ad/metrics.py`): DeepSDF chamfer x1e3 (30,000 points, squared, both "
          "directions summed, unit-sphere frame); chamfer-L1, F-score at 1% and normal consistency in ONet's "
          "unit cube; IoU of the inside; 2D: IoU and mean |sdf error| where |true sdf| < 0.1 on the grid.",
          ""]
    md += ["## Methods", "", "| method | latent source | seeds | decoder parameters | latent parameters | "
           "training seconds (mean per seed) | inference seconds per shape (code + mesh, held-out) |",
           "|---|---|---|---|---|---|---|"]
    for name in names:
        m = res["methods"][name]
        inf = m.get("inference_seconds_per_shape")
        md.append(f"| {name} | {m['latent_source']} | {m['seeds']} | {m['parameters']['decoder']:,} | "
                  f"{m['parameters']['latent']:,} | {m['train_seconds_mean']:.0f} | "
                  f"{'-' if inf is None else _fmt(inf)} |")
    md.append("")
    warnings = [f"**Warning: {name}, seed {x['seed']} (`{x['run']}`) did not learn**: {x['message']}. Its "
                "shapes count below as measured (failures at the worst value)." for name in names
                for x in res["methods"][name].get("not_learning", [])]
    if warnings:
        md += [*warnings, ""]
    for sec, sec_res in res["sections"].items():
        fig = out / f"{sec}.png"
        save_image(section_figure({"methods": cmp.evaluations[sec], "input": sec_res["input"]}, cmp.loaded,
                                  cmp.roots[sec], opts.resolution, cmp.device), fig)
        figures[fig.name] = fig
        rows = [(f"{n} ({sec_res['methods'][n]['mode']})", sec_res["methods"][n]["stats"]) for n in names]
        rows += [(f"{n} ({r['mode']})", r["stats"]) for n, r in sec_res.get("refined", {}).items()]
        md += [f"## {SECTION_TITLES[sec]}", "", f"`{sec_res['data']}`, {sec_res['split']} split, "
               f"{sec_res['input']} input.", ""]
        md += stats_table(rows, metrics) + [""]
        md += [amortisation_line(n, r["objective"]) for n, r in sec_res.get("refined", {}).items()
               if r.get("objective")] + [""]
        md += ["Seconds per shape:", ""] + stats_table(rows, timing) + [""]
        md += [f"![{fig.name}]({fig.name})", "",
               "Ground truth, " + ("the observed input, " if sec_res["input"] == "scan" else "")
               + "then each method (first seed), each panel with its own chamfer x10^3 (3D) or IoU (2D).", ""]
    if "generation" in opts.sections:
        img, info = generation_figure(cmp.loaded, opts, cmp.device)
        fig = out / "generation.png"
        save_image(img, fig)
        figures[fig.name] = fig
        res["generation"] = info
        md += ["## Generation", "",
               f"Per method: {opts.samples} codes drawn from a Gaussian fitted to its training "
               f"codes, then {opts.steps} codes on the line between its first two training shapes.", "",
               f"![{fig.name}]({fig.name})", ""]
    fig = code_loss_figure(cmp.evaluations, out / CODE_LOSS_PNG)
    if fig is not None:
        figures[fig.name] = fig
        md += ["## Test-time code optimisation", "",
               "The loss per step while codes are found (mean over the shapes, first seed), per section and "
               "method that optimises (a table lookup and a plain encoding have none).", "",
               f"![{fig.name}]({fig.name})", ""]
    curves = plot_runs([p for m in res["methods"].values() for p in m["runs"]], out / "curves.png")
    figures[curves.name] = curves
    md += ["## Training curves", "", f"![{curves.name}]({curves.name})", ""]
    md += ["## Fairness", "", "Checked equal for every run: " + ", ".join(
        f"{k} = {_short(v)}" for k, v in res["fair"].items() if k != "data") + ".", ""]
    text = "\n".join(md)
    formats.write_text_atomic(out / REPORT_MD, text)
    formats.write_text_atomic(out / REPORT_HTML, md_to_html(text, figures))
    return figures
