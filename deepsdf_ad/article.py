"""``deepsdf-ad article``: rerun the experiment presets and regenerate ``docs/autodecoders.md`` from their
outputs.

The article is a template (``docs/article/autodecoders.md.in``: hand-written prose plus directives) filled
from the run files, so no measured number in it is typed by hand:

- every table is rendered from an experiment's ``report/results.json`` and preceded by a comment
  ``<!-- table kind=... source=... -->`` naming that file, so a test can parse the table back and check it;
- every figure is copied (shrunk) from the experiment's report folder, or drawn here from its runs (slices),
  and captioned with the command and config that made it;
- sentences about the strength of the evidence (overlapping intervals, paired differences, one seed, few
  shapes) are generated from the numbers.

Directives (each ``{{ ... }}``; block directives stand alone on their line):

``{{ build }}``                       how and when the article was built (and a warning in quick mode)
``{{ headline }}``                    the headline tables (also written to README's marked block)
``{{ experiment NAME }}``             the measured section of one experiment (or why it was not run)
``{{ diagram }}``                     the figure of the two methods, drawn by code
``{{ quality_curve }}``               the quality-vs-training-minutes curve of the quality benchmark
``{{ budget NAME }}``                 what each method was given, beside DeepSDF's published setup
``{{ published NAME }}``              DeepSDF's and ONet's published numbers beside this build's
``{{ code_projection NAME }}``        each method's training codes on two principal axes, one scale
``{{ conclusion }}``                  per experiment and section: the paired test's winner, by how much,
                                      at what cost
``{{ config NAME METHOD KEY }}``      a value of a method's resolved config, e.g. ``train.code_reg``
``{{ shape_samples NAME }}``          K, the SDF samples per shape in the experiment's data
``{{ prior_std NAME METHOD }}``       the Gaussian prior's standard deviation implied by the code regulariser
                                      with K samples per shape
``{{ prior_norm NAME METHOD }}``      the typical norm of a code drawn from that prior
``{{ bound_vs_prior NAME METHOD }}``  whether the norm bound or the prior keeps table codes small
``{{ memory_breakeven NAME TABLE ENC }}`` training codes that weigh as much as the encoder (measured counts)
``{{ code_norms NAME }}``             measured norms and spread of each method's trained codes
``{{ code_bytes NAME METHOD }}``      bytes of one float32 code
``{{ preset NAME }}``                 the experiment preset's path

Which experiments the article reports is :data:`EXPERIMENTS`; an entry whose preset does not exist yet
(scenes, before its model lands) is reported as not run.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import yaml

from deepsdf_ad.data_prep import formats
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.evaluate import LOWER_IS_BETTER
from deepsdf_ad.evidence import (
    ALPHA,
    METRIC_LABELS,
    MIN_VERDICT_N,
    amortisation_sentences,
    clear_winner,
    failure_sentence,
    num,
    seed_spread,
    shapes_and_seeds,
    shown_seed_note,
    surprises,
    verdict,
    with_refined,
)

TEMPLATE = Path("docs") / "article" / "autodecoders.md.in"
"""The article's template, relative to the repository root."""
QUALITY_CURVE = Path("docs") / "images" / "quality_curve.png"
"""The quality-vs-training-minutes curve (``{{ quality_curve }}``), committed by the quality benchmark."""
QUALITY_CURVE_COMMAND = "python benchmarks/bench_quality.py --only curve --curve-limit 1"
ARTICLE_MD = "autodecoders.md"
IMAGES = "images/article"
HEADLINE_BEGIN = "<!-- article:headline -->"
HEADLINE_END = "<!-- /article:headline -->"
FIGURE_MAX_WIDTH = 900
RUN_INFO = "article_run.json"
RESULTS_DIR = "article/results"
"""Beside the article (``OUT/article/results/NAME.json``): each experiment's results.json, which its tables
cite."""


@dataclass(frozen=True)
class ArticleExperiment:
    """One experiment the article reports.

    Commands are ``deepsdf-ad`` arguments with placeholders: ``{shared}`` (the shared data folder), ``{data}``
    and ``{ood}`` (the experiment's data folders; the experiment gets ``--ood`` when a command writes
    ``{ood}``), ``{meshes:CAT,CAT[:N]}`` (a folder of links to the shared meshes of those categories, the
    first N of each when given), ``{extra:CAT,CAT[:N]}`` (the same from the shared archive of extra training
    meshes, :data:`EXTRA_ARCHIVE`, extracted once into ``WORK/extra_meshes``).
    """

    name: str
    """Key of the experiment in the template and prefix of its figures."""
    title: str
    preset: str
    """Experiment preset, relative to the repository."""
    data: tuple[str, ...]
    """Commands that prepare the data of the full run."""
    quick_data: tuple[str, ...]
    """The same, CI-sized (``--quick``)."""


EXPERIMENTS: tuple[ArticleExperiment, ...] = (
    ArticleExperiment(
        "digits", "MNIST digits (2D fields)", "configs/experiments/ad_vs_ae_digits.yaml",
        ("prep digits {shared}/mnist --out {data} --labels 0-7 --limit 3000 --quiet",
         "prep digits {shared}/mnist --out {ood} --labels 8-9 --limit 500 --quiet"),
        ("prep digits {shared}/mnist --out {data} --labels 0-7 --limit 60 --samples 1024 --quiet",
         "prep digits {shared}/mnist --out {ood} --labels 8-9 --limit 60 --samples 1024 --quiet")),
    ArticleExperiment(
        "shapes", "ModelNet chairs and tables (3D meshes)", "configs/experiments/ad_vs_ae_shapes.yaml",
        # trained on the extra archive's chairs and tables; every shared chair and table held out (>= 30 per
        # category), every shared sofa but one out of distribution
        ("prep meshes {extra:chair,table} --held-out {meshes:chair,table} --out {data} --samples 250000 "
         "--scans 1 --workers 2 --quiet",
         "prep meshes {meshes:sofa} --out {ood} --samples 250000 --test-fraction 1 --workers 2 --quiet"),
        ("prep meshes {meshes:chair,table:5} --out {data} --samples 20000 --scans 1 --workers 2 --quiet",
         "prep meshes {meshes:sofa:2} --out {ood} --samples 20000 --test-fraction 0.5 --quiet")),
    # lands with the scenes issue: reported as "not run" until configs/experiments/scenes.yaml exists
    ArticleExperiment(
        "scenes", "Scenes of several objects (local latent grids)", "configs/experiments/scenes.yaml",
        ("prep scenes {meshes:chair,table,sofa} --out {data} --scenes 30 --samples 200000 --scans 1 "
         "--test-fraction 0.34 --quiet",),
        ("prep scenes {meshes:chair,table,sofa:4} --out {data} --scenes 4 --objects 2-3 --samples 20000 "
         "--scans 1 --quiet",)),
)

SOURCE = re.compile(r"\{(meshes|extra):([^}]+)\}")
"""A mesh-source placeholder of a recipe: ``{meshes:SPEC}`` or ``{extra:SPEC}``."""
EXTRA_ARCHIVE = "modelnet10_train_extra.tar.xz"
"""The shared archive of extra ModelNet10 training meshes (relative to the shared data folder)."""

QUICK_SET = ["train.epochs=2", "train.checkpoint_every=1", "reconstruct.iterations=10",
             "reconstruct.samples=500", "mesh.resolution=32"]
"""Overrides added to every method in ``--quick`` mode (CI-sized: numbers check the machinery, not the
methods)."""
QUICK_COMPARE = {"limit": 1, "train_limit": 1, "resolution": 32, "samples": 3, "steps": 3}

SECTION_NAMES = {"representation": "Representation (training shapes)",
                 "reconstruction": "Held-out reconstruction (full observations)",
                 "completion": "Completion from partial observations",
                 "ood": "Out of distribution"}
SECTION_FIGURE_TEXT = {
    "representation": "training shapes decoded from their codes",
    "reconstruction": "held-out shapes reconstructed from full observations",
    "completion": "held-out shapes completed from a partial observation",
    "ood": "shapes of classes never trained on",
}


def primary_metric(dim: int) -> str:
    """The metric of the headline tables: IoU in 2D, DeepSDF's chamfer in 3D."""
    return "iou" if dim == 2 else "chamfer_x1e3"


def arrow(metric: str) -> str:
    return "↓" if metric in LOWER_IS_BETTER else "↑"


def rel(path: str | os.PathLike) -> str:
    """``path`` relative to the working folder when it lies below it (commands read as they were typed)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# ---- running ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to one experiment in this build."""

    exp: ArticleExperiment
    status: str
    """'run', 'reused', 'no-preset', 'skipped' or 'failed'."""
    reason: str = ""
    preset: Path | None = None
    """The preset as run (a derived copy in quick mode)."""
    prep_commands: list[str] = field(default_factory=list)
    data_notes: list[str] = field(default_factory=list)
    command: str = ""
    out: Path | None = None
    results: dict | None = None
    timing: dict = field(default_factory=dict)
    """prep_seconds and experiment_seconds of the build that ran it (``WORK/NAME/article_run.json``)."""

    @property
    def ok(self) -> bool:
        return self.results is not None

    @property
    def report(self) -> Path:
        return self.out / "report"


@dataclass
class BuildOptions:
    quick: bool = False
    work: Path = Path("article_out")
    out: Path = Path("docs")
    repo: Path | None = None
    """The checkout whose presets, template and code the build uses (None: :func:`find_repo` from the current
    directory)."""
    shared: Path | None = None
    """The shared data (meshes/, mnist/; None: ``shared/data`` beside the repository)."""
    data: dict = field(default_factory=dict)
    """Experiment name -> data folder given by the user (no prep)."""
    ood: dict = field(default_factory=dict)
    only: list | None = None
    max_meshes: int | None = None
    """At most this many meshes per category in the mesh sources (a reduced run; the article says so)."""
    overrides: list = field(default_factory=list)
    """Extra ``KEY=VALUE`` config overrides for every method of the experiments run in this build (a reduced
    run; shown in the article's commands)."""
    reuse: bool = False
    """Build from existing experiment outputs in ``work`` where they exist (no prep, no training)."""
    device: str = "auto"
    readme: Path | None = None
    progress: bool = True


def find_repo(start: str | os.PathLike | None = None) -> Path:
    """The deepsdf-ad checkout to build from: ``start`` itself when given, else the current directory or the
    nearest folder above it that holds :data:`TEMPLATE`. Raises :class:`DataError` when there is none."""
    if start is not None:
        root = Path(start).resolve()
        if not (root / TEMPLATE).is_file():
            raise DataError(f"{start}: not a deepsdf-ad checkout (no {TEMPLATE} in it); --repo takes the "
                            "repository's root folder")
        return root
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / TEMPLATE).is_file():
            return folder
    raise DataError(f"{here}: not in a deepsdf-ad checkout (no {TEMPLATE} here or in a folder above); run "
                    "the article build from the repository, or pass --repo DIR")


def _say(opts: BuildOptions, msg: str) -> None:
    if opts.progress:
        print(f"article: {msg}", flush=True)


def _mesh_source(kind: str, spec: str, opts: BuildOptions) -> Path:
    """``chair,table[:N]`` -> a folder of links to those meshes (the first N of each category): the shared
    meshes (``kind`` 'meshes') or the extra training meshes of the shared archive ('extra')."""
    from deepsdf_ad.data_prep.archives import category_folder, extract_once

    cats, n = _mesh_spec(spec, opts)
    dest = _mesh_source_path(kind, spec, opts)
    extracted = None
    if kind == "extra":
        extracted = extract_once(opts.shared / EXTRA_ARCHIVE, opts.work / "extra_meshes")
    for cat in cats.split(","):
        src = category_folder(extracted, cat) if extracted is not None else opts.shared / "meshes" / cat
        if not src.is_dir():
            raise DataError(f"{src}: shared meshes of category '{cat}' not found; pass --shared DIR (the "
                            "folder with meshes/ and mnist/) or give the data with --data NAME=DIR")
        files = sorted(p for p in src.iterdir() if p.is_file())[:n]
        (dest / cat).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = dest / cat / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return dest


def _expand(cmd: str, opts: BuildOptions, data: Path, ood: Path) -> list[str]:
    def sub(m: re.Match) -> str:
        return str(_mesh_source(m.group(1), m.group(2), opts))

    cmd = SOURCE.sub(sub, cmd)
    cmd = cmd.replace("{shared}", str(opts.shared)).replace("{data}", str(data)).replace("{ood}", str(ood))
    return shlex.split(cmd)


def experiment_args(preset: Path, data: Path, ood: Path | None, out: Path, opts: BuildOptions) -> list[str]:
    """The ``deepsdf-ad experiment`` arguments of one experiment: quiet when the build is; otherwise its
    progress bars go to the experiment's log (hours of training and measuring; see :func:`_run_cli`)."""
    args = ["experiment", str(preset), "--data", str(data), "--out", str(out), "--device", opts.device]
    if ood is not None:
        args[4:4] = ["--ood", str(ood)]
    if not opts.progress:
        args.append("--quiet")
    for o in opts.overrides:
        args += ["--set", o]
    return args


LOG_BAR_SECONDS = 30
"""How often a progress bar of a command the build runs updates its line in the log (``TQDM_MININTERVAL``):
a build of hours leaves a log of readable size."""


REPO_CLI = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
            "runpy.run_module('deepsdf_ad', run_name='__main__', alter_sys=True)")
"""The CLI of the checkout given as the first argument. Not ``python -m deepsdf_ad`` with the checkout on
PYTHONPATH: ``-m`` puts the current folder first on ``sys.path``, so a build started from another checkout
ran that checkout's code while it recorded the commit of ``--repo``."""


def repo_command(repo: Path, args: list[str]) -> list[str]:
    """The command that runs ``deepsdf-ad ARGS`` with the code of the checkout ``repo``, from any folder."""
    return [sys.executable, "-c", REPO_CLI, str(Path(repo).resolve()), *args]


def _run_cli(args: list[str], log: Path, what: str, repo: Path) -> None:
    """``deepsdf-ad ARGS`` with the code of the checkout ``repo`` (:func:`repo_command`) and its output in
    ``log``; a failure is a one-line DataError."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ deepsdf-ad {shlex.join(args)}\n")
        fh.flush()
        proc = subprocess.run(repo_command(repo, args), stdout=fh, stderr=subprocess.STDOUT,
                              env={"TQDM_MININTERVAL": str(LOG_BAR_SECONDS), **os.environ})
    if proc.returncode != 0:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise DataError(f"{what}: 'deepsdf-ad {args[0]}' failed (exit {proc.returncode}): "
                        f"{lines[-1] if lines else 'no output'} (log: {log})")


def quick_preset(preset: Path, dest: Path, repo: Path) -> Path:
    """A copy of the experiment preset with :data:`QUICK_SET` and :data:`QUICK_COMPARE` applied (its method
    presets made absolute: relative ones are read in the checkout ``repo``)."""
    data = yaml.safe_load(preset.read_text())
    data["name"] = f"{data.get('name', preset.stem)}_quick"
    data["set"] = [*(data.get("set") or []), *QUICK_SET]
    data["compare"] = {**(data.get("compare") or {}), **QUICK_COMPARE}
    methods = {}
    for k, v in (data.get("methods") or {}).items():  # method presets: absolute, the copy lives elsewhere
        cfg = v if isinstance(v, str) else v.get("config", "")
        p = (repo / cfg) if not Path(cfg).is_absolute() and (repo / cfg).is_file() else Path(cfg)
        methods[k] = str(p) if isinstance(v, str) else {**v, "config": str(p)}
    data["methods"] = methods
    dest.parent.mkdir(parents=True, exist_ok=True)
    formats.write_text_atomic(dest, "# made by deepsdf-ad article --quick from " + str(preset) + "\n"
                              + yaml.safe_dump(data, sort_keys=False))
    return dest


def run_one(exp: ArticleExperiment, opts: BuildOptions) -> Outcome:
    """Prepare the data of ``exp`` and run its experiment into ``work/NAME`` (or reuse its outputs)."""
    preset = opts.repo / exp.preset
    oc = Outcome(exp, "skipped", out=opts.work / exp.name)
    if not preset.is_file():
        oc.status, oc.reason = "no-preset", f"`{exp.preset}` does not exist in this checkout"
        return oc
    if opts.only is not None and exp.name not in opts.only:
        oc.status, oc.reason = "skipped", f"not selected in this build (`--only {' '.join(opts.only)}`)"
        return oc
    results_path = oc.report / "results.json"
    oc.preset = quick_preset(preset, opts.work / "presets" / preset.name, opts.repo) if opts.quick else preset
    if opts.reuse and results_path.is_file():
        oc.status, oc.results = "reused", formats.read_json(results_path)
        info = formats.read_json(oc.out / RUN_INFO) if (oc.out / RUN_INFO).is_file() else {}
        oc.timing = {k: v for k, v in info.items() if k not in ("prep_commands", "data_notes", "command")}
        if "command" in info:  # as the build that ran it recorded them
            oc.prep_commands, oc.data_notes = info["prep_commands"], info["data_notes"]
            oc.command = info["command"]
        else:
            _note_commands(oc, opts)
            oc.data_notes.append("the commands above are reconstructed from the recipe in "
                                 "`deepsdf_ad/article.py` (with the build's recorded `--max-meshes` and "
                                 f"`--set`): the build that ran this experiment did not record them in "
                                 f"`{RUN_INFO}`")
        _say(opts, f"{exp.name}: reusing {rel(results_path)}")
        return oc
    if opts.reuse:  # --reuse renders; it never starts a build (hours of training) behind the user's back
        oc.status, oc.reason = "no-results", (f"no results to reuse (`{rel(results_path)}` does not exist): "
                                              "build it without `--reuse`")
        _say(opts, f"{exp.name}: not measured: {oc.reason}")
        return oc
    data = Path(opts.data[exp.name]) if exp.name in opts.data else opts.work / "data" / exp.name
    ood = Path(opts.ood[exp.name]) if exp.name in opts.ood else opts.work / "data" / f"{exp.name}_ood"
    recipe = exp.quick_data if opts.quick else exp.data
    wants_ood = any("{ood}" in c for c in recipe) or exp.name in opts.ood
    log = opts.work / "logs" / f"{exp.name}.log"
    if log.exists():
        log.unlink()
    t_prep = time.perf_counter()
    for cmd in recipe:
        writes_ood = "{ood}" in cmd
        if (writes_ood and exp.name in opts.ood) or (not writes_ood and exp.name in opts.data):
            continue
        if not opts.shared.is_dir():
            raise DataError(f"{opts.shared}: shared data folder not found; pass --shared DIR or give the "
                            f"data of '{exp.name}' with --data {exp.name}=DIR")
        args = _expand(cmd, opts, data, ood)
        _say(opts, f"{exp.name}: deepsdf-ad {shlex.join(args)}")
        _run_cli(args, log, exp.name, opts.repo)
    args = experiment_args(oc.preset, data, ood if wants_ood else None, oc.out, opts)
    _say(opts, f"{exp.name}: deepsdf-ad {shlex.join(args)} (progress: {log})")
    t_exp = time.perf_counter()
    _run_cli(args, log, exp.name, opts.repo)
    oc.status, oc.results = "run", formats.read_json(results_path)
    oc.timing = {"prep_seconds": round(t_exp - t_prep, 1),
                 "experiment_seconds": round(time.perf_counter() - t_exp, 1), "quick": opts.quick,
                 "set": list(opts.overrides), "max_meshes": opts.max_meshes,
                 "commit": _git_commit(opts.repo)}
    _note_commands(oc, opts, data, ood if wants_ood else None)
    formats.write_json(oc.out / RUN_INFO, {**oc.timing, "prep_commands": oc.prep_commands,
                                           "data_notes": oc.data_notes, "command": oc.command})
    return oc


def _note_commands(oc: Outcome, opts: BuildOptions, data: Path | None = None,
                   ood: Path | None = None) -> None:
    """The commands that made ``oc``'s data and results, as the article shows them."""
    res = oc.results
    opts = replace(opts, max_meshes=oc.timing.get("max_meshes", opts.max_meshes),
                   quick=oc.timing.get("quick", opts.quick))
    data = Path(res["data"]) if data is None else data
    if ood is None and res.get("ood"):
        ood = Path(res["ood"])
    recipe = oc.exp.quick_data if opts.quick else oc.exp.data
    for cmd in recipe:
        writes_ood = "{ood}" in cmd
        if (writes_ood and oc.exp.name in opts.ood) or (not writes_ood and oc.exp.name in opts.data) or \
                (writes_ood and ood is None):
            continue
        shown = SOURCE.sub(lambda m: rel(_mesh_source_path(m.group(1), m.group(2), opts)), cmd)
        shown = shown.replace("{shared}", rel(opts.shared)).replace("{data}", rel(data))
        shown = shown.replace("{ood}", rel(ood) if ood else "")
        oc.prep_commands.append("deepsdf-ad " + shown.replace(" --quiet", ""))
        for m in SOURCE.finditer(cmd):
            cats, n = _mesh_spec(m.group(2), opts)
            n = str(n) if n else ""
            where = (f"`{rel(opts.shared / 'meshes')}`" if m.group(1) == "meshes" else
                     f"the extra training meshes of `{rel(opts.shared / EXTRA_ARCHIVE)}` (extracted to "
                     f"`{rel(opts.work / 'extra_meshes')}`)")
            oc.data_notes.append(f"`{rel(_mesh_source_path(m.group(1), m.group(2), opts))}` links "
                                 f"{'the first ' + n + ' ' if n else 'all '}meshes of each of "
                                 f"{', '.join(cats.split(','))} in {where}")
    for name, given in (("data", opts.data), ("ood", opts.ood)):
        if oc.exp.name in given:
            oc.data_notes.append(f"the {'out-of-distribution ' if name == 'ood' else ''}data folder "
                                 f"`{rel(given[oc.exp.name])}` was given with `--{name}`")
    args = ["deepsdf-ad", "experiment", rel(oc.preset), "--data", rel(data)]
    if ood is not None:
        args += ["--ood", rel(ood)]
    for o in oc.timing.get("set", []):
        args += ["--set", o]
    oc.command = " ".join(args + ["--out", rel(oc.out)])


def _mesh_spec(spec: str, opts: BuildOptions) -> tuple[str, int | None]:
    """``chair,table[:N]`` -> (categories, meshes per category or None), with ``--max-meshes`` applied."""
    cats, _, limit = spec.partition(":")
    caps = [v for v in (int(limit) if limit else None, opts.max_meshes) if v is not None]
    return cats, (min(caps) if caps else None)


def _mesh_source_path(kind: str, spec: str, opts: BuildOptions) -> Path:
    cats, n = _mesh_spec(spec, opts)
    return opts.work / "sources" / (("extra-" if kind == "extra" else "") + cats.replace(",", "+")
                                    + (f"-{n}" if n else ""))


# ---- figures ---------------------------------------------------------------------------------------------
def save_small(src: Path, dst: Path, max_width: int = FIGURE_MAX_WIDTH) -> Path:
    """Copy a picture as a small PNG: at most ``max_width`` pixels wide, 256 colours. The palette covers the
    colours present (maximum coverage), not the most frequent ones (median cut): median cut gave the thin
    blue lines of a training-curve legend the greens of the large areas (an error of 124 of 765)."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    img = img.quantize(colors=256, method=Image.Quantize.MAXCOVERAGE)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with formats.atomic_path(dst) as tmp:
        img.save(tmp, format="PNG", optimize=True)
    return dst


def _side_by_side(paths: list[Path], dst: Path) -> Path:
    from PIL import Image

    imgs = [Image.open(p).convert("RGB") for p in paths]
    h = max(i.height for i in imgs)
    canvas = Image.new("RGB", (sum(i.width for i in imgs), h), (255, 255, 255))
    x = 0
    for i in imgs:
        canvas.paste(i, (x, 0))
        x += i.width
    canvas.save(dst)
    return dst


SLICE_VMAX = 0.25
"""The slices' shared colour range, ±this (the fields' pictures saturate there too)."""


def slice_figures(oc: Outcome, opts: BuildOptions) -> tuple[Path | None, list[str], str]:
    """Slices of the first training shape: its ground truth, then each method's first run, side by side, on
    one colour scale (±:data:`SLICE_VMAX`). Returns the picture (in the work folder), the equivalent
    commands, and a note when a panel could not be drawn."""
    from deepsdf_ad.viz.slices import slice_run, slice_truth

    pics, cmds, notes = [], [], []
    folder = oc.out / "slices"
    folder.mkdir(parents=True, exist_ok=True)
    axis = "x"
    plane = "" if oc.results["dim"] == 2 else f" --axis {axis} --at 0"
    first = Path(next(iter(oc.results["methods"].values()))["runs"][0])
    data = oc.results["data"]

    def panel(name: str, run: Path, out: Path, extra: str, draw, errors: tuple) -> None:
        """One slice of the run's first training shape by ``draw(key)``; its command, or a note."""
        try:
            key = formats.read_json(run / "shapes.json")["keys"][0]
            draw(key)
        except errors as e:
            notes.append(f"{name}: not sliced ({str(e).splitlines()[0]})")
            return
        pics.append(out)
        cmds.append(f"deepsdf-ad slice --run {rel(run)} --shape {key}{plane}{extra} --vmax {SLICE_VMAX:g} "
                    f"--resolution 128 --out {rel(out)}")

    same = {"axis": axis, "at": 0.0, "resolution": 128, "vmax": SLICE_VMAX}
    truth = folder / "truth.png"
    panel("ground truth", first, truth, f" --truth {rel(data)}",
          partial(slice_truth, first, data_root=data, out=truth, **same),
          (DataError, KeyError, IndexError, ValueError, OSError))
    for name, m in oc.results["methods"].items():
        run, out = Path(m["runs"][0]), folder / f"{name}.png"
        draw = partial(slice_run, run, out=out, device=opts.device, title=name, **same)
        panel(name, run, out, "", draw, (DataError, KeyError, IndexError, ValueError, RuntimeError))
    if not pics:
        return None, cmds, "; ".join(notes)
    return _side_by_side(pics, folder / "slices.png"), cmds, "; ".join(notes)


# ---- runs that did not learn (the statistics of the run files: deepsdf_ad/evidence.py) -------------------
def stalled_runs(results: dict) -> list[str]:
    """One sentence per run of ``results``' methods whose training did not learn (the check ``train`` warns
    with, :func:`deepsdf_ad.health.stall_message`, on the run's recorded losses); runs not on this machine are
    not checked."""
    from deepsdf_ad.compare import not_learning
    from deepsdf_ad.runs import Run

    out = []
    for name, m in results.get("methods", {}).items():
        for x in not_learning([Run(p) for p in m.get("runs", [])]):
            out.append(f"{name}, seed {x['seed']} (`{rel(x['run'])}`) did not learn: "
                       f"{x['message'].split(': this run')[0]}, and {num(x['last_loss'])} at its last "
                       f"({x['epochs']}). `train` warns of such a run ([training.md](training.md#training) "
                       "says what made one stall and what changed since); the shapes it fails on below fail "
                       "for that, not for the method.")
    return out


# ---- rendering ---------------------------------------------------------------------------------------------
class Renderer:
    """Fills the template's directives; numbers figures and tables in order."""

    def __init__(self, outcomes: dict[str, Outcome], opts: BuildOptions, seconds: float,
                 template: Path | None = None):
        self.outcomes, self.opts, self.seconds = outcomes, opts, seconds
        self.template = template if template is not None else Path(opts.repo or ".") / TEMPLATE
        """The template being rendered (named in its errors)."""
        self.figures = 0
        self.tables = 0
        self.images: list[Path] = []
        self.image_dir = opts.out / IMAGES
        self.kept: dict[str, Path] = {}
        """Experiment -> its results.json kept beside the article (``OUT/article/results/NAME.json``)."""
        for name, oc in outcomes.items():
            if oc.ok:
                self.kept[name] = opts.out / RESULTS_DIR / f"{name}.json"
                self.kept[name].parent.mkdir(parents=True, exist_ok=True)
                formats.write_json(self.kept[name], oc.results)

    # -- helpers
    def _figure(self, src: Path, stem: str, caption: str, made_by: str) -> list[str]:
        dst = save_small(src, self.image_dir / f"{stem}.png")
        self.images.append(dst)
        self.figures += 1
        link = os.path.relpath(dst, self.opts.out)
        return [f"![{caption}]({link})", "",
                f"*Figure {self.figures}: {caption}.* Made by {made_by}.", ""]

    def _table_caption(self, text: str, oc: Outcome) -> list[str]:
        self.tables += 1
        return [f"*Table {self.tables}: {text}.* Source: `{rel(oc.report / 'results.json')}` (kept as "
                f"`{rel(self.kept[oc.exp.name])}`), made by {self._made_by(oc)}.", ""]

    def _src(self, oc: Outcome, base: Path | None = None) -> str:
        """The kept results file of ``oc``, relative to the folder of the file the table goes in."""
        return os.path.relpath(self.kept[oc.exp.name], base or self.opts.out)

    def _cfgs(self, oc: Outcome) -> str:
        from deepsdf_ad.experiment import load_experiment

        e = load_experiment(oc.preset)
        methods = ", ".join(f"{k} = `{rel(v['config'])}`"
                            + (f" with `{' '.join(v['set'])}`" if v["set"] else "")
                            for k, v in e.methods.items())
        return methods + (f"; overrides for all: `{' '.join(e.set)}`" if e.set else "")

    def _made_by(self, oc: Outcome) -> str:
        return f"`{oc.command}` (preset `{rel(oc.preset)}`)"

    # -- directives
    def diagram(self) -> list[str]:
        """The figure of the two methods, drawn by code (:mod:`deepsdf_ad.viz.diagram`)."""
        import tempfile

        from deepsdf_ad.viz.diagram import draw_methods_diagram

        with tempfile.TemporaryDirectory() as tmp:
            src = draw_methods_diagram(Path(tmp) / "methods.png")
            caption = ("the two ways of getting a code: a table of codes found by optimisation (left), an "
                       "encoder (right); the decoder is the same")
            return self._figure(src, "methods_diagram", caption, "`deepsdf_ad/viz/diagram.py`")

    def quality_curve(self) -> list[str]:
        """The quality-vs-training-minutes curve of the ``shapes_cpu`` presets, measured by
        ``benchmarks/bench_quality.py`` (not by the article's build) and committed beside docs/quality.md."""
        src = Path(self.opts.repo or ".") / QUALITY_CURVE
        if not src.is_file():
            return [f"(The quality-vs-training-minutes curve is not measured yet: `{QUALITY_CURVE_COMMAND}` "
                    f"writes `{QUALITY_CURVE}`.)", ""]
        caption = ("quality vs training minutes of the presets `shapes_cpu` (autodecoder) and "
                   "`shapes_cpu_ae` (autoencoder): median chamfer ×10³ at checkpoints of one run, of three "
                   "shapes per point (one per category), at 128³; a trend, not a measurement")
        return self._figure(src, "quality_curve", caption,
                            f"`{QUALITY_CURVE_COMMAND}`, not by this build (see [quality.md](quality.md))")

    def build(self) -> list[str]:
        ran = [oc for oc in self.outcomes.values() if oc.ok]
        o = self.opts
        cmd = "deepsdf-ad article" + (" --quick" if o.quick else "") + (" --reuse" if o.reuse else "") \
            + (f" --only {' '.join(o.only)}" if o.only else "") \
            + (f" --max-meshes {o.max_meshes}" if o.max_meshes else "") \
            + "".join(f" --set {x}" for x in o.overrides)
        how = {"run": "run by this build", "reused": "outputs of an earlier build reused (`--reuse`)",
               "no-preset": "no preset yet", "skipped": "not selected", "no-results": "no results to reuse"}
        status = "; ".join(f"{oc.exp.name}: {how.get(oc.status, oc.status)}" for oc in self.outcomes.values())
        lines = [f"*Generated by `{cmd}` on {time.strftime('%Y-%m-%d')} from {_git_commit(self.opts.repo)}: "
                 f"{len(ran)} of {len(self.outcomes)} experiments measured ({status}). Do not edit this "
                 "file: edit `docs/article/autodecoders.md.in` and run `make article`.*", ""]
        if self.opts.quick:
            lines += ["> **Quick mode.** This build used CI-sized data and training (overrides "
                      f"`{' '.join(QUICK_SET)}`, compare options `{QUICK_COMPARE}`). Its numbers check that "
                      "the machinery works end to end; they say nothing about the methods.", ""]
        return lines

    def headline(self) -> list[str]:
        out = []
        for oc in self.outcomes.values():
            if not oc.ok:
                continue
            out += self.headline_table(oc)
        if not out:
            out = ["No experiment was measured in this build.", ""]
        return out

    def headline_table(self, oc: Outcome, caption: bool = True, base: Path | None = None) -> list[str]:
        res = oc.results
        metric = primary_metric(res["dim"])
        names = list(res["methods"])
        lines = []
        if caption:
            lines += self._table_caption(
                f"{oc.exp.title}: {METRIC_LABELS[metric]} {arrow(metric)}, mean [bootstrap 95% interval of "
                f"the mean] over the shapes of each section", oc)
        lines += [f"<!-- table kind=headline source={self._src(oc, base)} metric={metric} "
                  f"methods={','.join(names)} -->",
                  "| section | " + " | ".join(names) + " | measured on | reading |",
                  "|---|" + "---|" * (len(names) + 2)]
        for sec, sr in res["sections"].items():
            cells = []
            for n in names:
                s = sr["methods"][n]["stats"]["all"].get(metric)
                cells.append("–" if not s else f"{num(s['mean'])} [{num(s['ci95'][0])}, {num(s['ci95'][1])}]")
            win = clear_winner(sr, metric)
            unit = shapes_and_seeds(list(sr["methods"].values()))
            lines.append(f"| {sec} | " + " | ".join(cells) + f" | {unit} | "
                         + (f"{win} better (paired Wilcoxon, p < {ALPHA})" if win
                            else f"not a clear difference (or fewer than {MIN_VERDICT_N} paired shapes)")
                         + " |")
        return lines + [""]

    def readme_block(self, readme: Path) -> str:
        lines = [HEADLINE_BEGIN, "",
                 f"From [docs/autodecoders.md](docs/autodecoders.md), built on {time.strftime('%Y-%m-%d')} "
                 f"from {_git_commit(self.opts.repo)} (`make article` rebuilds both); each cell is mean "
                 "[bootstrap 95% interval].", ""]
        for oc in self.outcomes.values():
            if oc.ok:
                res = oc.results
                m = primary_metric(res["dim"])
                reduced = self._reduced(oc)
                lines += [f"**{oc.exp.title}**, {METRIC_LABELS[m]} {arrow(m)} (`{oc.command}`"
                          + (f"; {'; '.join(reduced)}" if reduced else "") + "):", ""]
                lines += self.headline_table(oc, caption=False, base=readme.parent)
        return "\n".join(lines + [HEADLINE_END])

    def _outcome(self, name: str) -> Outcome:
        """The outcome of the experiment a directive names (DataError naming the known ones if none)."""
        oc = self.outcomes.get(name)
        if oc is None:
            raise DataError(f"{self.template}: unknown experiment '{name}'; known: "
                            f"{', '.join(self.outcomes)}")
        return oc

    def experiment(self, name: str) -> list[str]:
        oc = self._outcome(name)
        if not oc.ok:
            why = oc.reason or "its results are absent"
            return [f"**Not run in this build:** {why}. The article reports it once "
                    f"`{oc.exp.preset}` exists and `make article` has run it.", ""]
        res = oc.results
        names = list(res["methods"])
        lines = ["Commands, run in this order from the repository root:", "", "```"]
        lines += oc.prep_commands + [oc.command, "```", ""]
        if oc.data_notes:
            lines += ["Data: " + "; ".join(oc.data_notes) + ".", ""]
        lines += [f"Methods: {self._cfgs(oc)}.", ""]
        t = oc.timing
        tr = ", ".join(f"{n} {num(m['train_seconds_mean'])} s" for n, m in res["methods"].items())
        lines += [f"Training shapes: {res['fair']['train shapes']}; epochs: {res['fair']['train.epochs']}; "
                  f"{res['fair']['train.shapes_per_batch']} shapes × "
                  f"{res['fair']['train.samples_per_shape']} samples per step. Training time per run: {tr}."
                  + (f" Wall time of the build that ran it: data {num(t['prep_seconds'] / 60)} min, "
                     f"experiment (training and comparison) {num(t['experiment_seconds'] / 60)} min."
                     if t.get("prep_seconds") is not None else "")
                  + (f" The code that ran it: {t['commit']}." if t.get("commit") else ""), ""]
        lines += self._caveats(oc)
        lines += self._methods_table(oc)
        stalled = stalled_runs(res)
        if stalled:
            lines += [f"- {x}" for x in stalled] + [""]
        for sec, sr in res["sections"].items():
            lines += self._section(oc, sec, sr)
        if (oc.report / "generation.png").is_file():
            lines += [f"#### Generation ({oc.exp.name})", ""]
            gen = res.get("generation") or {}
            empty = [f"{n}: {g['non_empty']} of {g['samples']} samples have a surface" for n, g in gen.items()
                     if "non_empty" in g]
            lines += self._figure(oc.report / "generation.png", f"{oc.exp.name}_generation",
                                  f"{oc.exp.title}: per method, codes drawn from a Gaussian fitted to its "
                                  "training codes, then an interpolation between two training shapes",
                                  self._made_by(oc))
            if empty:
                lines += ["Generated shapes with a surface: " + "; ".join(empty) + ".", ""]
        pic, cmds, note = slice_figures(oc, self.opts)
        lines += [f"#### Slices ({oc.exp.name})", ""]
        if pic is not None:
            what = "the whole field" if res["dim"] == 2 else "the SDF on the plane x = 0"
            lines += self._figure(pic, f"{oc.exp.name}_slices",
                                  f"{oc.exp.title}: {what} of the first training shape, ground truth, then "
                                  f"{', '.join(names)} from left to right, on one colour scale "
                                  f"(±{num(SLICE_VMAX)}; blue inside, red outside, black: zero level)",
                                  "; ".join(f"`{c}`" for c in cmds))
        if note:
            lines += [f"Slices: {note}.", ""]
        if (oc.report / "code_optimisation.png").is_file():
            lines += [f"#### Test-time code optimisation ({oc.exp.name})", ""]
            lines += self._figure(oc.report / "code_optimisation.png", f"{oc.exp.name}_code_optimisation",
                                  f"{oc.exp.title}: the loss per step while the codes of each section are "
                                  "found by optimisation (mean over its shapes, first seed; the encoder's "
                                  "codes need no steps)", self._made_by(oc))
        if (oc.report / "curves.png").is_file():
            lines += [f"#### Training curves ({oc.exp.name})", ""]
            lines += self._figure(oc.report / "curves.png", f"{oc.exp.name}_curves",
                                  f"{oc.exp.title}: training loss (solid: total, dashed: SDF term) and "
                                  "learning rates per epoch of every run", self._made_by(oc))
        lines += self._summary(oc)
        return lines

    def _caveats(self, oc: Outcome) -> list[str]:
        res = oc.results
        seeds = {m["seeds"] for m in res["methods"].values()}
        ns = [len({r["key"] for r in m.get("shapes", [])}) or m["stats"]["all"]["shapes"]
              for sr in res["sections"].values() for m in sr["methods"].values()]
        out = []
        if oc.timing.get("quick", self.opts.quick):
            out.append("quick mode: tiny data and two epochs, so these numbers test the machinery only")
        out += self._reduced(oc)
        if max(seeds) == 1:
            out.append("one seed per method: the spread between training runs is not measured, so the "
                       "intervals cover only the choice of shapes")
        if ns and min(ns) < 20:
            out.append(f"{min(ns)} to {max(ns)} distinct shapes per method and section"
                       + (f" (each measured by {max(seeds)} seeds)" if max(seeds) > 1 else "")
                       + ": the intervals are wide, and a difference inside them is not evidence")
        return (["**How strong is this evidence?** " + "; ".join(out) + ".", ""]) if out else []

    @staticmethod
    def _reduced(oc: Outcome) -> list[str]:
        """What made this a reduced run, as the build that ran it recorded it."""
        out = []
        if oc.timing.get("max_meshes"):
            out.append(f"a reduced run: at most {oc.timing['max_meshes']} meshes per category "
                       "(`--max-meshes`), fewer than the full recipe")
        if oc.timing.get("set"):
            out.append(f"a reduced run: overrides `{' '.join(oc.timing['set'])}` on top of the preset "
                       f"(`--set`)")
        return out

    def _methods_table(self, oc: Outcome) -> list[str]:
        res = oc.results
        lines = self._table_caption(f"{oc.exp.title}: the methods compared", oc)
        lines += [f"<!-- table kind=methods source={self._src(oc)} -->",
                  "| method | latent source | seeds | decoder parameters | latent parameters | training s "
                  "(mean per seed) | inference s/shape (held-out, code + mesh) |",
                  "|---|---|---|---|---|---|---|"]
        for n, m in res["methods"].items():
            lines.append(f"| {n} | {m['latent_source']} | {m['seeds']} | {m['parameters']['decoder']} | "
                         f"{m['parameters']['latent']} | {num(m['train_seconds_mean'])} | "
                         f"{num(m.get('inference_seconds_per_shape'))} |")
        return lines + [""]

    def _section(self, oc: Outcome, sec: str, sr: dict) -> list[str]:
        res = oc.results
        metrics = [*res["metrics"], "code_seconds"]
        lines = [f"#### {SECTION_NAMES.get(sec, sec)} ({oc.exp.name})", ""]
        lines += self._table_caption(
            f"{oc.exp.title}, {SECTION_NAMES.get(sec, sec).lower()}: `{rel(sr['data'])}`, {sr['split']} "
            f"split, {sr['input']} input; mean / median [bootstrap 95% interval of the mean]", oc)
        lines += [f"<!-- table kind=section source={self._src(oc)} section={sec} "
                  f"columns={','.join(metrics)} -->",
                  "| method (how the code is found) | shapes | "
                  + " | ".join(f"{METRIC_LABELS.get(m, m)} {arrow(m)}" for m in metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        measured = [*sr["methods"].items(), *sr.get("refined", {}).items()]  # encode+refine rows last
        for n, m in measured:
            st = m["stats"]["all"]
            cells = []
            for k in metrics:
                s = st.get(k)
                cells.append("–" if not s else
                             f"{num(s['mean'])} / {num(s['median'])} [{num(s['ci95'][0])}, "
                             f"{num(s['ci95'][1])}]")
            failed = f" ({st['failed']} failed)" if st.get("failed") else ""
            lines.append(f"| {n} ({m['mode']}) | {st['shapes']}{failed} | " + " | ".join(cells) + " |")
        lines.append("")
        sentences = [failure_sentence(f"{n} ({m['mode']})", m) for n, m in measured
                     if m["stats"]["all"].get("failed")]
        sentences += [v for v in (verdict(sr, k) for k in res["metrics"]) if v]
        sentences += amortisation_sentences(sr, primary_metric(res["dim"]))
        spread = seed_spread(sr, primary_metric(res["dim"]))
        if spread:
            sentences.append(spread)
        times = {n: m["stats"]["all"].get("code_seconds") for n, m in sr["methods"].items()}
        times = {n: t["mean"] for n, t in times.items() if t and t["mean"] > 0}
        if len(times) >= 2:
            slow, fast = max(times, key=times.get), min(times, key=times.get)
            sentences.append(f"Finding a code: {fast} took {num(times[fast])} s per shape, {slow} "
                             f"{num(times[slow])} s ({num(times[slow] / times[fast])}× longer).")
        lines += [f"- {s}" for s in sentences] + [""]
        fig = oc.report / f"{sec}.png"
        if fig.is_file():
            shown = shown_seed_note(sr, primary_metric(res["dim"]))
            lines += self._figure(fig, f"{oc.exp.name}_{sec}",
                                  f"{oc.exp.title}: {SECTION_FIGURE_TEXT.get(sec, sec)}; ground truth, "
                                  + ("the observed input, " if sr.get("input") == "scan" else "")
                                  + f"then {', '.join(sr['methods'])} (first seed), each panel with its own "
                                  "chamfer x10^3 (3D) or IoU (2D)" + (f". {shown[:-1]}" if shown else ""),
                                  self._made_by(oc))
        return lines

    def _summary(self, oc: Outcome) -> list[str]:
        res = oc.results
        m = primary_metric(res["dim"])
        clear, unclear = [], []
        winners = {}
        for sec, sr in res["sections"].items():
            w = clear_winner(with_refined(sr), m)
            winners[sec] = w
            (clear if w else unclear).append(f"{SECTION_NAMES.get(sec, sec).lower()}"
                                             + (f" ({w})" if w else ""))
        lines = [f"**Reading ({oc.exp.name}, generated from the numbers above, by {METRIC_LABELS[m]}).** "]
        parts = []
        if clear:
            parts.append(f"Clear differences (paired Wilcoxon signed-rank tests over at least "
                         f"{MIN_VERDICT_N} shapes, p < {ALPHA}): " + "; ".join(clear) + ".")
        if unclear:
            parts.append(f"Not clear (no significant paired test, or fewer than {MIN_VERDICT_N} shapes): "
                         + "; ".join(unclear) + ".")
        distinct = {w for w in winners.values() if w}
        if len(distinct) > 1:
            parts.append("The ranking flips between sections: " + ", ".join(
                f"{w} wins {', '.join(s for s, x in winners.items() if x == w)}" for w in sorted(distinct))
                + ". Which method to use depends on what is observed.")
        parts += self._surprises(oc, m)
        lines[0] += " ".join(parts)
        return lines + [""]

    def _surprises(self, oc: Outcome, metric: str) -> list[str]:
        """Generated notes where a method's own sections rank against expectation (:func:`surprises`)."""
        def steps(method: str) -> int | None:
            cfg = self._method_config(oc.exp.name, method)
            return None if cfg is None else cfg.reconstruct.iterations

        return surprises(oc.results, metric, steps)

    # inline values
    def _method_config(self, name: str, method: str):
        from deepsdf_ad.config import load_config
        from deepsdf_ad.experiment import load_experiment

        oc = self._outcome(name)
        preset = oc.preset or self.opts.repo / oc.exp.preset
        if not Path(preset).is_file():
            return None
        e = load_experiment(preset)
        if method not in e.methods:
            raise DataError(f"{self.template}: experiment '{name}' has no method '{method}'; known: "
                            f"{', '.join(e.methods)}")
        m = e.methods[method]
        return load_config(m["config"], [*e.set, *m["set"]])

    def config(self, name: str, method: str, key: str) -> str:
        cfg = self._method_config(name, method)
        if cfg is None:
            return "(not available: preset missing)"
        v = cfg
        for part in key.split("."):
            if isinstance(v, dict) and part in v:
                v = v[part]
            elif not isinstance(v, dict) and hasattr(v, part):
                v = getattr(v, part)
            else:
                raise DataError(f"{self.template}: config key '{key}' not found")
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, (list, tuple)):
            if len(v) == 1:
                return str(v[0])
            return f"{len(v)}×{v[0]}" if v and all(x == v[0] for x in v) else ", ".join(map(str, v))
        return str(v)

    def _shape_samples(self, name: str) -> int | None:
        """K, the SDF samples per shape in the experiment's data: from the data's manifest when it is there,
        else from the ``--samples`` of the prep command the build runs (None: neither says)."""
        oc = self._outcome(name)
        data = (oc.results or {}).get("data")
        if data and Path(data).is_dir():
            params = formats.DataRoot(data).manifest().get("params", {})
            k = params.get("sampling", {}).get("samples", params.get("samples"))
            if k:
                return int(k)
        cmds = oc.exp.quick_data if self.opts.quick else oc.exp.data
        found = re.search(r"--samples (\d+)", cmds[0]) if cmds else None
        return int(found.group(1)) if found else None

    def _prior(self, name: str, method: str) -> tuple[float, float] | None:
        """(sigma, typical norm sigma * sqrt(L)) of the Gaussian prior the code regulariser is, for K samples
        per shape: 1 / (2 sigma^2) = lambda K."""
        cfg = self._method_config(name, method)
        k = self._shape_samples(name)
        if cfg is None or k is None:
            return None
        sigma = 1.0 / math.sqrt(2.0 * cfg.train.code_reg * k)
        return sigma, sigma * math.sqrt(cfg.model.latent.size)

    def shape_samples(self, name: str) -> str:
        k = self._shape_samples(name)
        return "(not available)" if k is None else f"{k:,}"

    def prior_std(self, name: str, method: str) -> str:
        prior = self._prior(name, method)
        return "(not available)" if prior is None else num(prior[0])

    def prior_norm(self, name: str, method: str) -> str:
        """Typical norm of a code drawn from that prior: sigma * sqrt(L)."""
        prior = self._prior(name, method)
        return "(not available)" if prior is None else num(prior[1])

    def code_norms(self, name: str) -> str:
        """A sentence on the trained codes of each method (first seed): their norms and spread, measured."""
        from deepsdf_ad.runs import Run

        oc = self._measured(name)
        if oc is None:
            return "(not measured in this build)"
        parts = []
        for n, m in oc.results["methods"].items():
            try:
                codes = Run(m["runs"][0]).codes().double().numpy()
            except (DataError, OSError, KeyError) as e:
                parts.append(f"{n}: codes not readable ({e})")
                continue
            norms = np.linalg.norm(codes, axis=1)
            text = (f"{n}: norms {num(norms.mean())} on average ({num(norms.min())} to {num(norms.max())}), "
                    f"spread across shapes {num(codes.std(axis=0).mean())} (standard deviation per "
                    "dimension, averaged)")
            cfg = self._method_config(name, n)
            bound = None if cfg is None or m["latent_source"] != "table" else cfg.model.latent.max_norm
            if bound is not None:
                text += (f", all inside the norm bound of {num(bound)}, so at the end of training the bound "
                         "is not what holds them" if norms.max() < 0.99 * bound else
                         f", the largest at the norm bound of {num(bound)}, so the bound is active")
            parts.append(text)
        return "; ".join(parts) + f". Measured on the {len(codes)} training codes of each method's first " \
            "run " \
            f"(`RUN/latent_codes.safetensors` in `{rel(oc.out / 'runs')}`)"

    def memory_breakeven(self, name: str, table: str, encoder: str) -> str:
        """How many training codes weigh as much as the encoder: a sentence from the measured parameter
        counts."""
        oc = self._measured(name)
        cfg = self._method_config(name, table)
        if oc is None or cfg is None or encoder not in oc.results["methods"]:
            return "The break-even point was not measured in this build"
        p = oc.results["methods"][encoder]["parameters"]["latent"]
        size = cfg.model.latent.size
        return (f"In the {name} experiment the encoder has {p} parameters (methods table), as many as the "
                f"codes of {p // size} shapes of length {size}")

    def bound_vs_prior(self, name: str, method: str) -> str:
        """Which keeps the table codes small, the norm bound or the prior: a sentence from the config."""
        cfg = self._method_config(name, method)
        if cfg is None:
            return "(not available)"
        bound = cfg.model.latent.max_norm
        both = self._prior(name, method)
        if both is None:
            return "(not available)"
        prior = both[1]
        if bound is None:
            return (f"The {name} preset has no norm bound, so there the prior alone keeps the codes near the "
                    f"origin, and only weakly")
        if prior > 2 * bound:
            return (f"In the {name} preset the prior's typical norm ({num(prior)}) is far larger than the "
                    f"norm bound ({num(bound)}): as a prior it is weak, and the bound is the tighter "
                    f"constraint")
        if prior >= 0.5 * bound:
            return (f"In the {name} preset the prior's typical norm ({num(prior)}) is about the norm bound "
                    f"({num(bound)}): the two constrain the codes about equally")
        return (f"In the {name} preset the prior's typical norm ({num(prior)}) is well within the norm bound "
                f"({num(bound)}), so the prior is the tighter constraint")

    def code_bytes(self, name: str, method: str) -> str:
        cfg = self._method_config(name, method)
        return "(not available)" if cfg is None else str(4 * cfg.model.latent.size)

    def _measured(self, name: str) -> Outcome | None:
        oc = self._outcome(name)
        return oc if oc.ok else None

    def budget(self, name: str) -> list[str]:
        """What each method of an experiment was given (shapes, parameters, updates per code, test-time steps,
        mesh resolution), beside DeepSDF's published chair setup (``configs/deepsdf_chairs.yaml``)."""
        from deepsdf_ad.experiment import load_experiment
        from deepsdf_ad.models import build_model
        from deepsdf_ad.published import DEEPSDF_BUDGET

        oc = self._measured(name)
        if oc is None:
            return [f"(The {name} experiment was not measured in this build, so its budget is not shown.)",
                    ""]
        res = oc.results
        fair = res["fair"]
        comp = load_experiment(oc.preset or self.opts.repo / oc.exp.preset).compare
        rows = []
        for n, m in res["methods"].items():
            cfg = self._method_config(name, n)
            table = m["latent_source"] == "table"  # found by optimisation; otherwise one encoder pass
            steps = (f"{cfg.reconstruct.iterations} × {cfg.reconstruct.samples:,}" if table
                     else "0 (one encoder pass)")
            res_mesh = comp.get("resolution") or cfg.mesh.resolution
            rows.append([n, str(fair["train shapes"]), f"{m['parameters']['decoder']:,}",
                         f"{m['parameters']['latent']:,}", str(cfg.model.latent.size), str(cfg.train.epochs),
                         str(cfg.train.epochs) if table else "– (computed)",
                         f"{cfg.train.shapes_per_batch} × {cfg.train.samples_per_shape:,}",
                         f"{num(m['train_seconds_mean'] / 60)} min, 2 CPU cores", steps, f"{res_mesh}³"])
        ds = DEEPSDF_BUDGET
        cfg = self._load_repo_config(ds["preset"])
        dec = build_model(3, cfg.model.decoder, cfg.model.latent, 0).decoder
        rows.append([f"DeepSDF, published ({ds['source']})", ds["shapes"],
                     f"{sum(p.numel() for p in dec.parameters()):,}", f"{cfg.model.latent.size} per shape",
                     str(cfg.model.latent.size), str(cfg.train.epochs), str(cfg.train.epochs),
                     f"{cfg.train.shapes_per_batch} × {cfg.train.samples_per_shape:,}", ds["time"],
                     ds["test_steps"], f"{ds['mesh_resolution']}³"])
        self.tables += 1
        head = ["method", "training shapes", "decoder parameters", "code-source parameters", "code length",
                "epochs", "updates per code", "samples per step", "training time",
                "test-time steps × samples",
                "mesh resolution"]
        return ([f"*Table {self.tables}: what each method of the {name} experiment was given, beside "
                 f"DeepSDF's published setup (its row from `{ds['preset']}`, which reproduces the release's "
                 f"`specs.json`).* Source: `{rel(oc.report / 'results.json')}` and the method presets.", "",
                 f"<!-- table kind=budget source={self._src(oc)} -->",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                + ["| " + " | ".join(r) + " |" for r in rows] + [""])

    def conclusion(self) -> list[str]:
        """The conclusion's measured part, per experiment and section: which method the paired test favours
        (or that it favours none), by how much (the ratio of the medians of the primary metric), and what
        finding a code cost each method; generated, so it says no more than the tables."""
        out = []
        for oc in self.outcomes.values():
            if not oc.ok:
                continue
            res = oc.results
            metric = primary_metric(res["dim"])
            lower = metric in LOWER_IS_BETTER
            items = []
            for sec, sr in res["sections"].items():
                sr = with_refined(sr)
                stats = {n: m["stats"]["all"].get(metric) for n, m in sr["methods"].items()}
                stats = {n: st for n, st in stats.items() if st}
                if len(stats) < 2:
                    continue
                win = clear_winner(sr, metric)
                meds = ", ".join(f"{n} {num(st['median'])}" for n, st in stats.items())
                n_shapes = shapes_and_seeds([sr["methods"][n] for n in stats])
                if win:
                    rest = [n for n in stats if n != win]
                    w = stats[win]["median"]
                    by = ", ".join(f"{num(stats[o]['median'] / w if lower else w / stats[o]['median'])}× "
                                   f"against {o}" for o in rest if w and stats[o]["median"])
                    items.append(f"{SECTION_NAMES.get(sec, sec).lower()}: **{win}** (paired Wilcoxon over "
                                 f"{n_shapes}, p < {ALPHA}; medians {meds}; "
                                 f"{'lower' if lower else 'higher'} by {by or '–'} at the median)")
                else:
                    items.append(f"{SECTION_NAMES.get(sec, sec).lower()}: no method clearly better (medians "
                                 f"{meds}; {n_shapes})")
            cost = ", ".join(f"{n} {num(m.get('inference_seconds_per_shape'))} s"
                             for n, m in res["methods"].items())
            found = "; ".join(items) if items else "no section has this metric for two methods"
            out += [f"- **{oc.exp.title}**, {METRIC_LABELS[metric]} {arrow(metric)}: {found}. Finding a code "
                    f"and meshing took per held-out shape: {cost}.", ""]
        return out or ["No experiment was measured in this build, so there is nothing to conclude from.", ""]

    def _load_repo_config(self, path: str):
        from deepsdf_ad.config import load_config

        return load_config(self.opts.repo / path if self.opts.repo else path, [])

    def published(self, name: str) -> list[str]:
        """Published numbers of DeepSDF and Occupancy Networks beside this build's, same metric, statistic
        and convention (:mod:`deepsdf_ad.published`), with the ratio."""
        from deepsdf_ad.published import PAPERS, UNITS, comparison_rows

        oc = self._measured(name)
        if oc is None:
            return [f"(The {name} experiment was not measured in this build, so there is nothing to set "
                    "beside the published numbers.)", ""]
        names = list(oc.results["methods"])
        self.tables += 1
        lines = [f"*Table {self.tables}: published numbers (as printed in the papers) beside the {name} "
                 "experiment's, converted to the papers' units; ratio = this toolkit's / the paper's. The "
                 "data differ (ShapeNet there, ModelNet10 here) and so do the budgets (table above).* "
                 f"Source: `{rel(oc.report / 'results.json')}` and `deepsdf_ad/published.py`.", "",
                 f"<!-- table kind=published source={self._src(oc)} -->",
                 "| paper | where | task | data | metric | statistic | published | "
                 + " | ".join(f"{n} (ratio)" for n in names) + " |",
                 "|" + "---|" * (7 + len(names))]
        for row in comparison_rows(oc.results["sections"], names):
            p = row["published"]
            cells = ["–" if row["ours"][n] is None else
                     f"{num(row['ours'][n])} ({num(row['ratio'][n])}×, n = {row['shapes'][n]})"
                     for n in names]
            lines.append(f"| {PAPERS[p.paper]} | {p.where} | {p.task} | {p.data} | {UNITS[p.metric]} | "
                         f"{p.statistic} | {num(p.value)} | " + " | ".join(cells) + " |")
        return lines + [""]

    def code_projection(self, name: str) -> list[str]:
        """The figure of each method's training codes on their first two principal axes, on one scale, with
        the spread across shapes over the common part printed on each panel (:mod:`deepsdf_ad.codes`)."""
        import tempfile

        import torch

        from deepsdf_ad.codes import project_2d, spread_ratio, training_codes
        from deepsdf_ad.runs import Run
        from deepsdf_ad.viz.codes import draw_code_projection

        oc = self._measured(name)
        if oc is None:
            return [f"(The {name} experiment was not measured in this build, so its codes are not drawn.)",
                    ""]
        root = formats.DataRoot(oc.results["data"])
        panels, notes = [], []
        for n, m in oc.results["methods"].items():
            try:
                codes, keys = training_codes(Run(m["runs"][0]), root, torch.device("cpu"))
            except (DataError, OSError, KeyError) as e:
                notes.append(f"{n}: codes not available ({e})")
                continue
            proj, share = project_2d(codes)
            ratio = spread_ratio(codes)
            panels.append((f"{n} ({m['latent_source']})", proj, [k.split("/", 1)[0] for k in keys],
                           f"{len(codes)} training codes\nspread / common part = {num(ratio)}\n"
                           f"2 axes hold {num(100 * share)}% of the variance"))
            notes.append(f"{n}: spread across shapes {num(ratio)}× the norm of the mean code")
        if not panels:
            return ["(No method's codes could be read: " + "; ".join(notes) + ".)", ""]
        with tempfile.TemporaryDirectory() as tmp:
            src = draw_code_projection(panels, Path(tmp) / "codes.png")
            caption = (f"the training shapes' codes of each method of the {name} experiment (first seed) on "
                       "their first two principal axes, in units of the codes' RMS norm, so codes that all "
                       "sit near one common code collapse to a dot at the centre; " + "; ".join(notes))
            return self._figure(src, f"{name}_code_projection", caption,
                                f"`deepsdf_ad/viz/codes.py` from the runs of {self._made_by(oc)}")

    def preset(self, name: str) -> str:
        oc = self._outcome(name)
        return oc.exp.preset


DIRECTIVE = re.compile(r"\{\{\s*([a-z_]+)((?:\s+[^\s}]+)*)\s*\}\}")
BLOCKS = {"build", "headline", "experiment", "diagram", "budget", "published", "code_projection",
          "conclusion", "quality_curve"}
INLINE = {"config", "shape_samples", "prior_std", "prior_norm", "bound_vs_prior", "memory_breakeven",
          "code_norms", "code_bytes", "preset"}


def render(template: str, renderer: Renderer) -> str:
    out: list[str] = []
    for lineno, line in enumerate(template.splitlines(), 1):
        m = DIRECTIVE.fullmatch(line.strip())
        if m and m.group(1) in BLOCKS:
            out += getattr(renderer, m.group(1))(*m.group(2).split())
            continue

        def inline(mm: re.Match, lineno=lineno) -> str:
            if mm.group(1) not in INLINE:
                raise DataError(f"{renderer.template}:{lineno}: unknown or misplaced directive "
                                f"'{mm.group(1)}' (block directives {', '.join(sorted(BLOCKS))} stand alone "
                                "on their line)")
            return getattr(renderer, mm.group(1))(*mm.group(2).split())

        out.append(DIRECTIVE.sub(inline, line))
    return "\n".join(out).rstrip() + "\n"


def _git_commit(repo: Path) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if proc.returncode != 0 or not proc.stdout.strip():
            return "a checkout"
        dirty = subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", "deepsdf_ad",
                                "data_prep", "viz", "configs", "docs/article/autodecoders.md.in"],
                               capture_output=True, timeout=10)
        return (f"commit {proc.stdout.strip()}"
                + (" with uncommitted changes" if dirty.returncode == 1 else ""))
    except (OSError, subprocess.SubprocessError):
        return "a checkout"


def update_readme(readme: Path, block: str) -> None:
    """Replace the marked headline block of ``readme`` (kept between :data:`HEADLINE_BEGIN` and ``_END``)."""
    text = readme.read_text()
    if HEADLINE_BEGIN not in text or HEADLINE_END not in text:
        raise DataError(f"{readme}: no {HEADLINE_BEGIN} ... {HEADLINE_END} block; add the two marker lines "
                        "where the headline table should go")
    a = text.index(HEADLINE_BEGIN)
    b = text.index(HEADLINE_END) + len(HEADLINE_END)
    formats.write_text_atomic(readme, text[:a] + block + text[b:])


def build_article(opts: BuildOptions, template: Path | None = None) -> dict:
    """Run (or reuse) every experiment of :data:`EXPERIMENTS` and write ``opts.out/autodecoders.md`` with its
    figures in ``opts.out/images/article``; with ``opts.readme``, also its headline block. Returns a summary.

    ``opts.repo`` (None: found with :func:`find_repo`) is the checkout whose presets and code run;
    ``template`` (None: its :data:`TEMPLATE`) the article's template."""
    t0 = time.perf_counter()
    repo = find_repo(opts.repo)
    opts = replace(opts, repo=repo, shared=opts.shared or repo.parent / "shared" / "data")
    template = repo / TEMPLATE if template is None else Path(template)
    if not template.is_file():
        raise DataError(f"{template}: article template not found")
    known = [e.name for e in EXPERIMENTS]
    for n in [*(opts.only or []), *opts.data, *opts.ood]:
        if n not in known:
            raise DataError(f"unknown article experiment '{n}'; known: {', '.join(known)}")
    opts.work.mkdir(parents=True, exist_ok=True)
    outcomes = {e.name: run_one(e, opts) for e in EXPERIMENTS}
    renderer = Renderer(outcomes, opts, time.perf_counter() - t0, template)
    image_dir = opts.out / IMAGES
    if image_dir.is_dir():  # the folder is the article's own: drop pictures of experiments no longer shown
        for p in image_dir.glob("*.png"):
            p.unlink()
    for name, oc in outcomes.items():
        if not oc.ok and (opts.out / RESULTS_DIR / f"{name}.json").is_file():
            (opts.out / RESULTS_DIR / f"{name}.json").unlink()
    text = render(template.read_text(), renderer)
    opts.out.mkdir(parents=True, exist_ok=True)
    article = opts.out / ARTICLE_MD
    formats.write_text_atomic(article, text)
    if opts.readme is not None:
        update_readme(Path(opts.readme), renderer.readme_block(Path(opts.readme)))
    return {"article": article, "figures": renderer.figures, "tables": renderer.tables,
            "experiments": {n: oc.status for n, oc in outcomes.items()}, "seconds": time.perf_counter() - t0}

