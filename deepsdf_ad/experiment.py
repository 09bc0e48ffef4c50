"""``deepsdf-ad experiment EXP.yaml``: train every method of an experiment preset (one config each, the same
overrides for all, one run per seed) and compare them.

An experiment preset (``configs/experiments/*.yaml``)::

    name: ad_vs_ae_digits
    methods:                       # method name -> model preset (a path relative to the file, or a preset)
      autodecoder: configs/digits_autodecoder.yaml
      autoencoder: {config: configs/digits_pointnet_ae.yaml, set: ["model.latent.kwargs={points: 64}"]}
    set: [train.epochs=20]         # overrides applied to every method (keeps them comparable)
    seeds: [0]                     # train.seed of each run; the report pools them
    compare: {limit: 25, resolution: 64}   # fields of compare.CompareOptions

Layout of ``OUT``: ``OUT/experiment.yaml`` (the preset as run), ``OUT/runs/<method>/seed_<K>/`` (runs; a
second call resumes them), ``OUT/report/`` (``report.md``, ``report.html``, figures, ``results.json``).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from deepsdf_ad.compare import CompareOptions, Reporter, compare
from deepsdf_ad.config import EXPERIMENTS, ConfigError, find_preset, load_config, read_yaml_mapping
from deepsdf_ad.data_prep.formats import DataError, write_text_atomic


@dataclass
class Experiment:
    name: str = "experiment"
    """Name of the experiment."""
    methods: dict = field(default_factory=dict)
    """Method name -> model preset (YAML path), or {config: path, set: [overrides of this method only]}."""
    set: list = field(default_factory=list)
    """``key=value`` overrides applied to every method."""
    seeds: list = field(default_factory=lambda: [0])
    """One run per seed and method."""
    compare: dict = field(default_factory=dict)
    """Options of the comparison (:class:`deepsdf_ad.compare.CompareOptions`)."""


def method_preset(path: str, base: Path) -> Path:
    """A method's model preset: a file relative to the working folder or the experiment file (or its two
    parent folders), else a preset by name or repository path (:func:`deepsdf_ad.config.find_preset`)."""
    p = Path(path)
    for cand in (p, base / p, base.parent / p, base.parent.parent / p):
        if cand.is_file():
            return cand
    try:
        return find_preset(p)
    except ConfigError as e:
        raise ConfigError(f"{base}: method preset '{path}' not found (relative to the working folder or the "
                          f"experiment file, nor a preset: {e})") from None


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and check an experiment preset (a YAML file, or an experiment preset's name: see
    :func:`deepsdf_ad.config.find_preset`); unknown keys and missing presets are one-line errors."""
    p = find_preset(path, EXPERIMENTS)
    known = [f.name for f in fields(Experiment)]
    data = read_yaml_mapping(p, "experiment file not found",
                             f"expected a mapping with keys {', '.join(known)}")
    for k in data:
        if k not in known:
            raise ConfigError(f"{p}: unknown key '{k}'; known: {', '.join(known)}")
    exp = Experiment(**data)
    if not isinstance(exp.methods, dict) or len(exp.methods) < 1:
        raise ConfigError(f"{p}: 'methods' must map at least one method name to a model preset")
    copt = [f.name for f in fields(CompareOptions)]
    for k in exp.compare:
        if k not in copt:
            raise ConfigError(f"{p}: unknown key 'compare.{k}'; known: {', '.join(copt)}")
    if not exp.seeds or not all(isinstance(s, int) and s >= 0 for s in exp.seeds):
        raise ConfigError(f"{p}: 'seeds' must be a list of integers >= 0")
    methods = {}
    for k, v in exp.methods.items():
        if isinstance(v, str):
            v = {"config": v, "set": []}
        if not isinstance(v, dict) or "config" not in v or set(v) - {"config", "set"}:
            raise ConfigError(f"{p}: method '{k}' must be a preset path or "
                              "{config: PATH, set: [KEY=VALUE ...]}")
        methods[str(k)] = {"config": str(method_preset(v["config"], p.parent)),
                           "set": list(v.get("set") or [])}
    exp.methods = methods
    for m in exp.methods.values():  # fail now, not after training the first method
        load_config(m["config"], [*exp.set, *m["set"]])
    return exp


def run_experiment(path: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
                   ood: str | os.PathLike | None = None, overrides: list[str] | None = None,
                   device: str = "auto", progress: bool = True, report: Reporter | None = None) -> dict:
    """Train every method of the preset at ``path`` for every seed on ``data`` into ``out/runs`` and compare
    them into ``out/report`` (``report``: the report writer, e.g. :func:`deepsdf_ad.viz.report.write_report`).
    Returns the comparison results (with ``seconds`` of the whole experiment)."""
    from deepsdf_ad.train import seed_run_path, train

    t0 = time.perf_counter()
    exp = load_experiment(path)
    extra = list(overrides or [])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    as_run = copy.deepcopy(exp.__dict__)
    as_run["set"] = list(exp.set) + extra
    write_text_atomic(out / "experiment.yaml", yaml.safe_dump(as_run, sort_keys=False))
    method_dirs = []
    for name, m in exp.methods.items():
        for seed in exp.seeds:
            cfg = load_config(m["config"], [*exp.set, *m["set"], *extra, f"train.seed={seed}"])
            if progress:
                print(f"experiment {exp.name}: training {name} (seed {seed})", flush=True)
            train(cfg, data, seed_run_path(out / "runs" / name, seed), device=device, progress=progress)
        method_dirs.append(out / "runs" / name)
    try:
        opts = CompareOptions(**exp.compare)
    except TypeError as e:
        raise DataError(f"{path}: bad compare options ({e})") from None
    results = compare(method_dirs, data, out / "report", ood=ood, opts=opts, device=device, progress=progress,
                      report=report)
    results["experiment_seconds"] = round(time.perf_counter() - t0, 1)
    return results
