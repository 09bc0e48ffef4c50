"""``deepsdf-ad compare``: runs of several methods (each one run or a folder of ``seed_K`` runs) measured on
the same shapes, with the same conventions; :mod:`deepsdf_ad.viz.report` turns the results into
``REPORT_DIR/report.md`` and ``report.html``.

Sections: representation (train shapes), reconstruction of held-out shapes, completion from partial views,
out-of-distribution shapes (``--ood DATA2``), generation (codes from a Gaussian fitted to the training
codes; an interpolation), training curves. Each metric is reported per method and category as mean,
median and a bootstrap 95% interval of the mean (1,000 resamples of the shapes, seeds pooled).

Runs are compared only when they share what makes a comparison fair: the training data, the decoder,
the code length, the dimension, the shapes and samples per step and the epochs.

Resumable: each run's evaluation of each section is kept in ``REPORT_DIR/evaluations/`` (records as JSON,
codes as safetensors) under what it depends on (the run's newest checkpoint, the shapes, the options), so a
comparison killed after hours redoes only the batch of shapes it was in (each evaluation in progress is kept
after every batch of ``EvalOptions.batch`` shapes); a changed run or option is measured again.

Shareable: an evaluation being measured is claimed (an advisory lock, ``<run>.lock`` beside it, released when
its process ends however it ends), so the same comparison started again in other processes (or on other
GPUs of the machine) measures the evaluations nobody has claimed, then waits for the claimed ones and reads
them: N processes share the work of one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.folders import file_lock
from deepsdf_ad.data_prep.formats import DataError, DataRoot
from deepsdf_ad.device import resolve_device
from deepsdf_ad.evaluate import LOWER_IS_BETTER, EvalOptions, PartialEval, evaluate_run
from deepsdf_ad.models.sources import optimised_source
from deepsdf_ad.runs import Run, load_trained

RESULTS_JSON = "results.json"
BOOTSTRAP = 1000
EVAL_CACHE = "evaluations"
"""``REPORT_DIR/evaluations/<section>/<method>/<run>.json`` (+ ``.safetensors``): the kept evaluations."""


@dataclass
class CompareOptions:
    """How much ``compare`` measures (sized by the caller; the experiment presets set these)."""

    limit: int | None = None
    """At most this many shapes per category in each section; None: all."""
    train_limit: int | None = None
    """At most this many training shapes per category in the representation section (None: ``limit``)."""
    resolution: int | None = None
    """Grid points per axis for meshes and 2D fields (default: each run's ``mesh.resolution``)."""
    samples: int = 8
    """Generated shapes per method."""
    steps: int = 6
    """Shapes in the interpolation, both ends included."""
    sections: list[str] = field(default_factory=lambda: ["representation", "reconstruction", "completion",
                                                         "ood", "generation"])
    """Sections to include (the curves are always drawn)."""
    refine: list[str] = field(default_factory=lambda: ["completion"])
    """Sections in which every method that encodes is measured a second time with its codes refined by
    optimisation (``encode+refine``): the amortisation gap as Cremer et al. define it, in the objective (the
    data term of the test-time loss at the encoder's code against the refined code's) and in the outcome (the
    metrics of both); ``results.json`` keeps it under each section's ``refined``. As costly as the
    autodecoder's optimisation on those shapes."""


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
        raise DataError(f"{p}: neither a run folder nor a folder of seed_K runs; train it with "
                        "'deepsdf-ad train'")
    return [Run(q).require() for q in subs]


def fairness_items(run: Run) -> dict[str, object]:
    """What two runs must share to be compared, by config key."""
    cfg = run.config()
    shapes = run.shapes()
    return {"data": str(Path(shapes["data"]).resolve()), "train shapes": len(shapes["keys"]),
            "dim": cfg.dim, "model.decoder": asdict(cfg.model.decoder),
            "model.latent.size": cfg.model.latent.size, "train.shapes_per_batch": cfg.train.shapes_per_batch,
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


def score_failed(groups: dict[str, list[dict]], metrics: list[str]) -> dict[str, list[dict]]:
    """Per-shape records ({group: [record]}, one section) with every failed one (``failed`` in it) scored as
    the worst case, so that it counts in every mean instead of dropping out: a lower-is-better metric gets the
    worst finite value over all groups (inf when there is none), a higher-is-better one 0. The ``failed``
    mark stays, so the tables can count the failures. The records given are not changed."""
    worst = {}
    for m in metrics:
        vals = [r[m] for rows in groups.values() for r in rows
                if "failed" not in r and r.get(m) is not None and math.isfinite(r[m])]
        worst[m] = (max(vals) if vals else math.inf) if m in LOWER_IS_BETTER else 0.0
    return {g: [r if "failed" not in r else {**r, **worst} for r in rows] for g, rows in groups.items()}


def score_failures(evaluations: dict[str, list[dict]], metrics: list[str]) -> dict[str, list[dict]]:
    """One section's evaluations ({method: [evaluation per run]}) with their failed shapes scored by
    :func:`score_failed` over all methods and runs together."""
    groups = {(name, k): ev["shapes"] for name, evs in evaluations.items() for k, ev in enumerate(evs)}
    scored = score_failed(groups, metrics)
    return {name: [{**ev, "shapes": scored[(name, k)]} for k, ev in enumerate(evs)]
            for name, evs in evaluations.items()}


def table_stats(records: list[dict], metrics: list[str]) -> dict:
    """Stats per category and over all shapes: {"all" | category: {metric: stats}}."""
    groups = {"all": records}
    cats = sorted({r["category"] for r in records})
    if len(cats) > 1:
        groups.update({c: [r for r in records if r["category"] == c] for c in cats})
    return {g: {"shapes": len(rows), "failed": sum(1 for r in rows if "failed" in r),
                **{m: metric_stats(rows, m) for m in metrics}} for g, rows in groups.items()}


def per_shape(evaluations: list[dict], metrics: list[str]) -> list[dict]:
    """Each shape's values, seed by seed (``seed``: the run's position among the method's runs), so that
    methods can be paired shape by shape (same key and seed position)."""
    return [{"key": r["key"], "seed": k, **{m: r.get(m) for m in metrics}, **({"failed": r["failed"]}
                                                                             if "failed" in r else {})}
            for k, ev in enumerate(evaluations) for r in ev["shapes"]]


REFINE_MODE = "encode+refine"


def refine_objective(evaluations: list[dict]) -> dict | None:
    """The amortisation gap in the objective, from ``encode+refine`` evaluations (one per seed): per shape
    (averaged over its seeds) the data term of the test-time objective at the encoder's code and at the
    refined code, and their difference (the gap); their means and medians over the shapes, and the median of
    the gap as a share of the encoder's value. None when the records carry no objective."""
    by_shape: dict[str, list[tuple[float, float]]] = {}
    for ev in evaluations:
        for r in ev["shapes"]:
            if r.get("objective_encoded") is not None and r.get("objective_refined") is not None:
                by_shape.setdefault(r["key"], []).append((r["objective_encoded"], r["objective_refined"]))
    if not by_shape:
        return None
    v = np.array([np.mean(pairs, axis=0) for pairs in by_shape.values()])  # (shapes, 2)
    gap = v[:, 0] - v[:, 1]
    share = gap / np.maximum(v[:, 0], 1e-12)
    return {"shapes": len(v), "encoded": {"mean": float(v[:, 0].mean()), "median": float(np.median(v[:, 0]))},
            "refined": {"mean": float(v[:, 1].mean()), "median": float(np.median(v[:, 1]))},
            "gap": {"mean": float(gap.mean()), "median": float(np.median(gap))},
            "gap_share_median": float(np.median(share)), "lowered": int((gap > 0).sum())}


def not_learning(runs: list[Run]) -> list[dict]:
    """The runs (of one method, in seed order) whose training did not learn, by ``train``'s own check on their
    recorded losses (:func:`deepsdf_ad.health.stall_message`); runs whose folder is gone are not checked:
    [{"seed": position, "run": path, "message", "last_loss", "epochs"}]."""
    from deepsdf_ad.health import run_losses, stall_message

    out = []
    for k, run in enumerate(runs):
        losses = run_losses(run.metrics()) if run.path.is_dir() else []
        msg = stall_message(losses)
        if msg:
            out.append({"seed": k, "run": str(run.path), "message": msg, "last_loss": losses[-1],
                        "epochs": len(losses)})
    return out


def parameter_counts(run: Run) -> dict[str, int]:

    _, model = load_trained(run, torch.device("cpu"))
    return {"decoder": sum(p.numel() for p in model.decoder.parameters()),
            "latent": sum(p.numel() for p in model.latent.parameters())}


# ---- kept evaluations (resume) --------------------------------------------------------------------------
def evaluation_key(run: Run, data: Path, eopts: EvalOptions) -> dict:
    """What a run's evaluation depends on: the run, its newest checkpoint, the shapes and the options."""
    cks = run.checkpoints()
    return {"run": str(run.path.resolve()), "checkpoint": cks[-1]["sha256"] if cks else None,
            "data": str(Path(data).resolve()), "options": asdict(eopts)}


PARTIAL = ".partial"
"""``<run>.partial.json`` (+ ``.safetensors``): an evaluation done up to a batch of shapes, until it ends."""


def read_kept(base: Path, key: dict) -> tuple[dict, torch.Tensor] | None:
    """The JSON body and the codes kept at ``base`` (.json + .safetensors) under ``key``; None when absent,
    unreadable or kept for another key."""
    from safetensors.torch import load_file

    js, st = base.with_suffix(base.suffix + ".json"), base.with_suffix(base.suffix + ".safetensors")
    if not (js.is_file() and st.is_file()):
        return None
    try:
        kept = formats.read_json(js)
        if kept.get("key") == key:
            return kept, load_file(str(st))["codes"]
    except (DataError, KeyError, OSError, ValueError):
        pass  # unreadable (a kill mid-write cannot leave one: both are renamed into place): measure again
    return None


def keep(base: Path, body: dict, codes: torch.Tensor) -> None:
    """Write ``body`` (JSON) and ``codes`` (safetensors) at ``base``: the codes first, the JSON (what
    :func:`read_kept` checks) last, each renamed into place."""
    from safetensors.torch import save_file

    base.parent.mkdir(parents=True, exist_ok=True)
    with formats.atomic_path(base.with_suffix(base.suffix + ".safetensors")) as tmp:
        save_file({"codes": codes.detach().cpu().contiguous()}, str(tmp))
    formats.write_json(base.with_suffix(base.suffix + ".json"), body)


CLAIM = ".lock"
"""``<run>.lock``: the advisory lock (``fcntl.flock``) of the process measuring that evaluation."""


@contextlib.contextmanager
def claimed(base: Path, wait: bool):
    """Hold the claim on the evaluation at ``base``: yields True once held (``wait``: blocks while another
    process holds it), or False at once when another process holds it and not ``wait``. The lock goes with
    its process, so a killed holder never blocks anyone."""
    try:
        import fcntl  # noqa: F401 (file_lock's; only asked whether this system has it)
    except ImportError:  # no flock (Windows): one process at a time, as before claims
        yield True
        return
    base.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(base.with_name(base.name + CLAIM), wait=wait) as fd:
        yield fd is not None


def kept_evaluation(run: Run, data: Path, eopts: EvalOptions, folder: Path, device: str,
                    progress: bool, wait: bool = True, label: str = "") -> dict | None:
    """:func:`deepsdf_ad.evaluate.evaluate_run` with its codes, read from ``folder`` when an earlier
    comparison left it there for the same :func:`evaluation_key`, else measured and kept there. While it is
    measured, what is done is kept after each batch of shapes (``<run>.partial.*``), and a killed
    comparison resumes from there. Measuring takes the evaluation's claim (:func:`claimed`): while another
    process holds it, this call waits for that process and reads what it kept, or with ``wait=False``
    returns None at once. ``label``: what the progress line names (with ``progress``)."""
    key = evaluation_key(run, data, eopts)
    base = folder / run.path.name
    kept = read_kept(base, key)
    if kept is not None:
        return {**kept[0]["evaluation"], "codes": kept[1]}
    with claimed(base, wait) as mine:
        if not mine:
            return None
        kept = read_kept(base, key)  # kept by the process that held the claim while this one waited
        if kept is not None:
            return {**kept[0]["evaluation"], "codes": kept[1]}
        pbase = base.with_name(base.name + PARTIAL)
        part = read_kept(pbase, key)
        if progress:
            print(f"compare: measuring {label or folder.name} ({run.path.name})", flush=True)
        resume = None if part is None else PartialEval(part[0]["records"], part[1], part[0]["curves"],
                                                       part[0]["mode"])

        def on_batch(done: PartialEval) -> None:
            body = {"key": key, "records": done.records, "curves": done.curves, "mode": done.mode}
            keep(pbase, body, done.codes)

        ev = evaluate_run(run.path, data, eopts, device=device, progress=progress, keep_codes=True,
                          resume=resume, on_batch=on_batch)
        keep(base, {"key": key, "evaluation": {k: v for k, v in ev.items() if k != "codes"}}, ev["codes"])
        for suffix in (".json", ".safetensors"):  # the comparison's own scratch, superseded by the kept one
            pbase.with_suffix(pbase.suffix + suffix).unlink(missing_ok=True)
        return ev


def method_mode(run: Run) -> str:
    """How a run finds codes by default ('optimise' or 'encode'), from its config's latent source."""
    return "optimise" if optimised_source(run.config().model.latent.source) else "encode"


def measure_all(jobs: dict[tuple, tuple], device: str, progress: bool) -> dict[tuple, dict]:
    """Every job ``id -> (run, data, eopts, folder)`` measured or read (:func:`kept_evaluation`), in order:
    first those no other process has claimed, then, waiting for their holders, the rest."""
    def label(jid: tuple) -> str:
        sec, name, refine = jid[:3]
        return f"{sec}: {name}" + (f" ({refine})" if refine else "")

    done, waiting = {}, []
    for jid, (run, data, eopts, folder) in jobs.items():
        ev = kept_evaluation(run, data, eopts, folder, device, progress, wait=False, label=label(jid))
        if ev is None:
            waiting.append(jid)
            if progress:
                print(f"compare: {label(jid)} ({run.path.name}) is being measured by another process; going "
                      "on with the rest", flush=True)
        else:
            done[jid] = ev
    for jid in waiting:
        run, data, eopts, folder = jobs[jid]
        done[jid] = kept_evaluation(run, data, eopts, folder, device, progress, wait=True, label=label(jid))
    return done


# ---- the comparison ------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Everything a report needs: the results (plain data, ``results.json``), each section's evaluations
    per method and seed (with their codes), the first run of each method loaded, and where to write."""

    results: dict
    evaluations: dict
    """section -> method -> [evaluate_run results with codes], one per seed."""
    loaded: dict
    """method -> (run, config, model) of its first seed."""
    roots: dict
    """section -> DataRoot of its shapes."""
    metrics: list
    opts: CompareOptions
    out: Path
    device: torch.device


Reporter = Callable[[Comparison], None]


def compare(runs: list[str | os.PathLike], data: str | os.PathLike, out: str | os.PathLike,
            ood: str | os.PathLike | None = None, opts: CompareOptions | None = None, device: str = "auto",
            progress: bool = True, report: Reporter | None = None) -> dict:
    """Measure the methods ``runs`` (run folders or folders of seed runs) on ``data``.

    Writes ``REPORT_DIR/results.json``; ``report`` (e.g. :func:`deepsdf_ad.viz.report.write_report`, passed in
    by the CLI: the library does not draw) then writes the figures and ``report.md`` / ``report.html``.
    Returns the results.
    """

    opts = opts or CompareOptions()
    t0 = time.perf_counter()
    if len(runs) < 1:
        raise DataError("compare needs at least one run")
    unknown = [s for s in opts.refine if s not in SECTION_TITLES]
    if unknown:
        raise DataError(f"--refine {' '.join(unknown)}: not a section; use any of "
                        f"{', '.join(SECTION_TITLES)}")
    names = [Path(r).name or str(r) for r in runs]
    if len(set(names)) != len(names):
        names = [str(r) for r in runs]
    methods = {n: method_runs(r) for n, r in zip(names, runs, strict=True)}
    check_fair(methods, data)
    dev = resolve_device(device)
    root = DataRoot(data)
    out = Path(out)
    dim = methods[names[0]][0].config().dim
    metrics = ["chamfer_x1e3", "chamfer_l1", "fscore", "normal_consistency", "iou"] if dim == 3 else \
        ["iou", "near_contour_error"]
    timing = ["code_seconds", "mesh_seconds"]

    plan = []
    if "representation" in opts.sections:
        plan.append(("representation", root, "train", "full"))
    if "reconstruction" in opts.sections:
        plan.append(("reconstruction", root, "test", "full"))
    if "completion" in opts.sections and (dim == 2 or (root.root / formats.SCANS_DIR).is_dir()):
        plan.append(("completion", root, "test", "scan"))
    if "ood" in opts.sections and ood is not None:
        plan.append(("ood", DataRoot(ood), "test", "full"))

    results: dict = {"data": str(root.root), "ood": None if ood is None else str(ood), "dim": dim,
                     "metrics": metrics, "methods": {}, "sections": {},
                     "fair": fairness_items(methods[names[0]][0])}
    for name, rs in methods.items():
        train_s = [sum(r.get("seconds", 0.0) for r in run.metrics()) for run in rs]
        results["methods"][name] = {"runs": [str(r.path) for r in rs],
                                    "latent_source": rs[0].config().model.latent.source,
                                    "parameters": parameter_counts(rs[0]),
                                    "train_seconds_mean": float(np.mean(train_s)), "seeds": len(rs),
                                    "not_learning": not_learning(rs)}
    # every evaluation of the plan, in order: (section, method, refined?, seed index) -> what it measures
    modes = {name: method_mode(rs[0]) for name, rs in methods.items()}
    jobs: dict[tuple, tuple] = {}
    for sec, sroot, split, inp in plan:
        limit = opts.train_limit if split == "train" and opts.train_limit is not None else opts.limit
        eopts = EvalOptions(split=split, input=inp, resolution=opts.resolution, limit=limit)
        for name, rs in methods.items():
            for i, run in enumerate(rs):
                jobs[(sec, name, "", i)] = (run, sroot.root, eopts, out / EVAL_CACHE / sec / name)
        if sec in opts.refine:
            for name, rs in methods.items():
                if modes[name] != "encode":
                    continue
                for i, run in enumerate(rs):
                    jobs[(sec, name, REFINE_MODE, i)] = (run, sroot.root, replace(eopts, mode=REFINE_MODE),
                                                         out / EVAL_CACHE / sec / f"{name}+refine")
    measured = measure_all(jobs, device, progress)
    evaluations: dict = {}
    roots: dict = {}
    for sec, sroot, split, inp in plan:
        sec_res: dict = {"title": SECTION_TITLES[sec], "split": split, "input": inp, "data": str(sroot.root),
                         "methods": {}}
        evaluations[sec], roots[sec] = {}, sroot
        for name, rs in methods.items():
            evaluations[sec][name] = [measured[(sec, name, "", i)] for i in range(len(rs))]
        refined = {name: [measured[(sec, name, REFINE_MODE, i)] for i in range(len(rs))]
                   for name, rs in methods.items() if (sec, name, REFINE_MODE, 0) in measured}
        # failures are scored over every measurement of the section, the refined ones with the rest
        scored = score_failures({**{(n, ""): e for n, e in evaluations[sec].items()},
                                 **{(n, REFINE_MODE): e for n, e in refined.items()}}, metrics)
        for (name, refine), evs in scored.items():
            pooled = [r for ev in evs for r in ev["shapes"]]
            entry = {"mode": evs[0]["mode"], "stats": table_stats(pooled, metrics + timing),
                     "shapes": per_shape(evs, metrics + timing)}
            if not refine:
                sec_res["methods"][name] = entry
            else:
                sec_res.setdefault("refined", {})[name] = {**entry, "objective": refine_objective(evs)}
        results["sections"][sec] = sec_res
    for name in names:
        st = results["sections"].get("reconstruction", {}).get("methods", {}).get(name, {}).get("stats", {})
        a = st.get("all", {})
        results["methods"][name]["inference_seconds_per_shape"] = (
            a["code_seconds"]["mean"] + a["mesh_seconds"]["mean"]
            if a.get("code_seconds") and a.get("mesh_seconds") else None)
    out.mkdir(parents=True, exist_ok=True)
    loaded = {name: (rs[0], *load_trained(rs[0], dev)) for name, rs in methods.items()}
    cmp = Comparison(results, evaluations, loaded, roots, metrics, opts, out, dev)
    if report is not None:
        report(cmp)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    formats.write_json(out / RESULTS_JSON, results)
    return results
