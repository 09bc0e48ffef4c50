"""The typed config tree: YAML in (``yaml.safe_load``), ``--set key=value`` overrides, plain YAML out.

Every field has a docstring where it is declared. Unknown keys are errors that list the known ones.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from deepsdf_ad import Precision
from deepsdf_ad.models.base import LatentConfig
from deepsdf_ad.models.decoder import DecoderConfig
from deepsdf_ad.typed import ConfigError, from_dict

COSINE_FLOOR = 0.02
"""Cosine schedules end at this fraction of their initial learning rate."""


def cosine_lr(initial: float, step: int, total: int) -> float:
    """Half a cosine from ``initial`` at step 0 down to ``initial * COSINE_FLOOR`` at step ``total``."""
    half_cosine = 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    return initial * (COSINE_FLOOR + (1 - COSINE_FLOOR) * half_cosine)


@dataclass
class Schedule:
    """Learning-rate schedule over epochs: ``step`` (DeepSDF's: ``initial * factor ** (epoch // interval)``)
    or ``cosine`` (half a cosine from ``initial`` down to 1/50 of it at the last epoch; ``interval`` and
    ``factor`` unused)."""

    initial: float = 5e-4
    """Learning rate at epoch 0."""
    interval: int = 500
    """Epochs between drops (step)."""
    factor: float = 0.5
    """Multiplier at each drop (step)."""
    kind: Literal["step", "cosine"] = "step"
    """'step' or 'cosine'."""

    def at(self, epoch: int, epochs: int) -> float:
        """The learning rate of ``epoch`` in a run of ``epochs``."""
        if self.kind == "cosine":
            return cosine_lr(self.initial, epoch, epochs)
        return self.initial * self.factor ** (epoch // max(self.interval, 1))


@dataclass
class ModelConfig:
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """The SDF MLP shared by every latent source."""
    latent: LatentConfig = field(default_factory=LatentConfig)
    """Where codes come from and their size."""


@dataclass
class TrainConfig:
    epochs: int = 2001
    """Passes over the training shapes."""
    shapes_per_batch: int = 64
    """Shapes in one optimisation step (DeepSDF's ScenesPerBatch)."""
    samples_per_shape: int = 16384
    """SDF samples drawn per shape per step, half from ``pos`` and half from ``neg``."""
    batch_split: int | str = "auto"
    """Parts each step's batch goes through the network in, their gradients added up to the whole batch's
    (DeepSDF's BatchSplit), so a batch larger than memory allows trains the same. An integer up to
    ``shapes_per_batch`` cuts the shapes into that many parts; a larger one also cuts each shape's samples.
    ``auto`` keeps each part's widest activation within 4 MiB on the CPU (measured fastest: larger buffers
    miss the caches, and over 32 MiB come from fresh pages whose faults cost a third of a DeepSDF-size step)
    and within half the free memory on CUDA."""
    samples_on: Literal["auto", "device", "host"] = "auto"
    """Where the training samples live: ``device`` (drawn where the model is: no copies), ``host`` (pinned
    host memory; each step's draw is copied over asynchronously), or ``auto``: the device unless they would
    take more than half of a GPU's free memory."""
    sample_store: Literal["auto", "memory", "mmap"] = "auto"
    """Where training reads the samples from: ``memory`` (every rank loads every shape), ``mmap`` (the data
    root's sample store, ``DATA/store``, memory-mapped, packed on first use; each rank reads its share of the
    shapes), or ``auto``: ``mmap`` when the banks of a node's ranks would take more than a quarter of its
    memory. Both give the same samples (on the host) for a seed; see docs/scale.md."""
    clamp: float = 0.1
    """Clamping distance of the L1 loss (DeepSDF's ClampingDistance)."""
    loss: Literal["clamped_l1", "l1"] = "clamped_l1"
    """'clamped_l1' (DeepSDF, for signed distances) or 'l1' (no clamp: heightfield intensities)."""
    code_reg: float = 1e-4
    """Weight of the code regulariser ||z||^2 (a Gaussian prior on codes); 0 disables."""
    code_reg_rampup: int = 100
    """Epochs over which the regulariser weight ramps up linearly from 0."""
    lr_decoder: Schedule = field(default_factory=lambda: Schedule(5e-4, 500, 0.5))
    """Decoder learning-rate schedule."""
    lr_latent: Schedule = field(default_factory=lambda: Schedule(1e-3, 500, 0.5))
    """Latent learning-rate schedule (codes of the table, or the encoder's weights)."""
    checkpoint_every: int = 100
    """Epochs between checkpoints (the last epoch is always saved)."""
    keep_checkpoints: int = 3
    """Checkpoints kept on disk (older ones are removed); 0 keeps all, otherwise at least 2."""
    precision: Precision = "fp32"
    """Training arithmetic: fp32, bf16 (autocast) or fp16 (autocast, CUDA)."""
    seed: int = 0
    """Seed of initialisation, shuffling, sampling and dropout."""
    decoder_from: str | None = None
    """Amortise a trained autodecoder: the run folder whose decoder this run takes over, frozen, while its
    encoder learns to give that decoder's codes in one pass (``deepsdf_ad.amortise``). The run must have
    trained on the same shapes with the same decoder; None = train the decoder too."""
    code_target: float = 0.0
    """With ``decoder_from``: weight of the pull of each encoder code towards the autodecoder's learned code
    for the same shape (squared distance over the codes' variance), added to the sdf loss through the frozen
    decoder; 0 = the sdf loss alone. Above 0 it needs ``decoder_from`` (``shapes_cpu_amortised``: 0.01)."""
    amortise_unseen: bool = False
    """With ``decoder_from``: also train the encoder on shapes the autodecoder never saw (more data than it
    had): they get the sdf loss through the frozen decoder but no code pull. False = refuse such shapes (the
    usual cause is the wrong data folder)."""
    tensorboard: bool = False
    """Also write each epoch's metrics and code norms as TensorBoard event files in ``RUN/tensorboard`` (needs
    ``pip install 'deepsdf-ad[tensorboard]'``; see :mod:`deepsdf_ad.board`)."""


@dataclass
class ReconstructConfig:
    iterations: int = 800
    """Optimisation steps for a code (DeepSDF: 800)."""
    lr: float = 5e-3
    """Initial learning rate of the code."""
    lr_drop_at: float = 0.5
    """Fraction of the iterations after which the learning rate drops by ``lr_drop_factor``."""
    lr_drop_factor: float = 0.1
    """Learning-rate multiplier at the drop."""
    schedule: Literal["step", "cosine"] = "step"
    """'step' (DeepSDF: ``lr`` until ``lr_drop_at``, then ``lr * lr_drop_factor``) or 'cosine' (from ``lr``
    down to ``lr / 50`` over the iterations, half a cosine; ``lr_drop_at`` then only paces
    ``samples_start``)."""
    samples: int = 8000
    """Observations used per step."""
    code_reg: float = 1e-4
    """Weight of ||z||^2 during optimisation."""
    refine_prior: float = 0.0
    """``encode+refine``: weight of ||z - z_enc||^2, a prior centred on the encoder's code z_enc (added to
    ``code_reg``'s, which is centred on 0), so the refinement leaves the encoding only as far as the
    observations ask; 0 = none (the refinement goes wherever the observations pull)."""
    init_std: float = 0.01
    """Codes start as N(0, init_std^2) (DeepSDF) unless ``init`` says otherwise."""
    init: Literal["mean", "random", "best"] = "mean"
    """Start from 'mean' (the mean training code), 'random' (N(0, init_std^2), DeepSDF) or 'best': whichever
    of the mean code, the zero code and up to 62 training codes explains a probe of 256 observations best (the
    mean code can sit in a worse basin than a near-zero start: measured in
    ``benchmarks/bench_reconstruct.py``)."""
    normal_offset: float = 0.01
    """Scan points are also moved +/- this far along their normals, with sdf = +/- offset."""
    free_space: int = 4
    """Free-space samples per scan point, along the camera ray in front of the surface."""
    free_space_weight: float = 1.0
    """Weight of a free-space observation in the loss (a surface point's is 1)."""
    free_space_margin: float = 0.0
    """A free-space point d in front of the surface has sdf >= min(margin, d / 2), not just >= 0: a thin
    spurious sheet across seen free space then costs about the margin per point inside it, not its tiny
    depth."""
    samples_start: int = 0
    """Observations per step at the first step, growing linearly to ``samples`` by the learning-rate drop
    (early steps only need the rough direction); 0 = ``samples`` throughout (DeepSDF)."""
    patience: int = 0
    """Plateau schedule: when the smoothed loss has not improved by 1% over this many steps, drop the learning
    rate early, and after the drop stop early; 0 = the fixed schedule (DeepSDF)."""
    restarts: int = 1
    """Starts per shape, optimised side by side in one batch: the ``restarts`` best start candidates
    (``init: best``), else the start and ``restarts - 1`` perturbed copies of it (N(0, init_std^2) added). At
    ``restart_at`` of the iterations each shape keeps the one with the lowest loss (mean of the last 10 steps)
    and goes on with it alone; 1 = one start."""
    restart_at: float = 0.25
    """Fraction of the iterations after which the restarts are narrowed down to one per shape."""
    precision: Precision = "fp32"
    """Arithmetic of the decoder during the optimisation: fp32, bf16 / fp16 autocast (about 2x faster on a
    CPU with native bf16), or auto (see :data:`deepsdf_ad.PRECISIONS`); ``reconstruct --precision`` sets it
    and the meshing's together."""
    robust: Literal["none", "huber", "truncated"] = "none"
    """Loss of each observation's residual (the distance of the clamped prediction to its clamped interval):
    'none' (L1, DeepSDF's clamped L1), 'huber' (quadratic below ``robust_scale``) or 'truncated' (flat beyond
    ``robust_scale``). The clamp already makes the loss flat for far outliers; see docs/reconstruction.md for
    what was measured before keeping 'none'."""
    robust_scale: float = 0.02
    """Where 'huber' turns linear and 'truncated' flat (normalised-frame units)."""
    frame_up: Literal["x", "y", "z"] = "z"
    """The training frame's vertical axis (z: ModelNet meshes as ``prep meshes`` leaves them; y: ShapeNet,
    DeepSDF's data). A scan in an unknown frame is turned so that its up axis becomes this one."""


@dataclass
class MeshConfig:
    resolution: int = 256
    """Grid points per axis of the marching-cubes grid over [-1, 1]^dim."""
    batch_points: int | None = None
    """Decoder queries per batch; null: chosen for the device
    (:func:`deepsdf_ad.meshing.auto_batch_points`)."""


@dataclass
class Config:
    name: str = "shapes"
    """Name of the preset."""
    dim: int = 3
    """Coordinate dimension: 3 for shapes, 2 for digits."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Decoder and latent source."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop."""
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    """Finding codes for new observations."""
    mesh: MeshConfig = field(default_factory=MeshConfig)
    """Extracting meshes."""


def _plain(obj):
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def to_dict(cfg) -> dict:
    """Plain data (lists, dicts, scalars) for ``yaml.safe_dump``."""
    return _plain(asdict(cfg))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a plain config mapping."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"bad --set '{item}'; use key=value, e.g. --set train.epochs=10")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 5e-3 (no dot) as a string; a user means the number
            try:
                value = float(value)
            except ValueError:
                pass
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {} if p not in node else node[p]
                if not isinstance(node[p], dict):
                    raise ConfigError(f"--set {key}: '{p}' is not a section")
            node = node[p]
        node[parts[-1]] = value
    return data


def read_yaml_mapping(path: str | os.PathLike, missing: str, not_mapping: str) -> dict:
    """A YAML file whose top level is a mapping (``yaml.safe_load``; empty file: {}). A missing file, bad YAML
    or another top level is a :class:`ConfigError` naming the file: ``missing`` and ``not_mapping`` say what
    is wrong and what to do."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {missing}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        msg = str(e).replace("\n", " ")
        raise ConfigError(f"{p}: not valid YAML ({msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: {not_mapping}")
    return data


PRESETS = Path(__file__).resolve().parent / "configs"
"""Where the presets are: the repository's ``configs/``, shipped in the package as ``deepsdf_ad/configs`` (a
link in a checkout, a folder once installed). Model presets at the top, experiment presets in
``experiments/``."""
EXPERIMENTS = "experiments"
"""The folder of :data:`PRESETS` that holds the experiment presets (``deepsdf-ad experiment``)."""
PRESET_SUFFIX = ".yaml"


def preset_names(folder: str = "") -> list[str]:
    """The names of the presets in ``PRESETS/folder`` ('': model presets; :data:`EXPERIMENTS`), sorted."""
    return sorted(p.stem for p in (PRESETS / folder).glob(f"*{PRESET_SUFFIX}") if p.is_file())


def find_preset(name: str | os.PathLike, folder: str = "") -> Path:
    """The YAML file of a config: ``name`` itself where that file exists, else the preset of that name in
    ``PRESETS/folder`` ('': model presets; :data:`EXPERIMENTS`).

    A name is a bare name (``shapes_small``, with or without ``.yaml``) or the preset's path in the repository
    (``configs/shapes_cpu.yaml``, ``configs/experiments/scenes.yaml``), which then works from any folder and
    once installed. Anything else that is not a file is a :class:`ConfigError` listing the presets.
    """
    path = Path(name)
    if path.is_file():
        return path
    rel = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    if rel and not path.is_absolute():
        rel_path = Path(*rel)
        if rel_path.suffix != PRESET_SUFFIX:
            rel_path = rel_path.with_name(rel_path.name + PRESET_SUFFIX)
        for cand in (PRESETS / folder / rel_path, PRESETS / rel_path):
            if cand.is_file():
                return cand
    kind = "experiment presets" if folder == EXPERIMENTS else "presets"
    known = ", ".join(preset_names(folder)) or f"none ({PRESETS / folder} is empty)"
    if len(path.parts) == 1 and path.suffix in ("", PRESET_SUFFIX):
        raise ConfigError(f"unknown preset '{path.name}'; {kind}: {known} (or give the path of a YAML file)")
    what = "experiment file" if folder == EXPERIMENTS else "config file"
    raise ConfigError(f"{path}: {what} not found; {kind}: {known}")


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (missing keys take defaults), apply overrides, and check everything.

    Args:
        path: a YAML file, or a preset's name (``shapes_small``; see :func:`find_preset`); None: the defaults.
        overrides: ``key.sub=value`` strings (``--set``).
    """
    data: dict = {}
    if path is not None:
        path = find_preset(path)
        data = read_yaml_mapping(path, "config file not found",
                                 "expected a mapping of config keys at the top level")
        if not data:
            raise ConfigError(f"{path}: config file is empty; name a preset ({', '.join(preset_names())}); a "
                              "run would otherwise train on the built-in defaults without a word")
    # resolve every key against the full default tree so errors name the real path
    full = apply_overrides(_merge(to_dict(Config()), data, ""), overrides or [])
    cfg = from_dict(Config, full)
    validate(cfg)
    return cfg


def _merge(base: dict, new: dict, prefix: str) -> dict:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "kwargs":
            out[k] = _merge(base[k], v, f"{prefix}{k}.")
        else:
            out[k] = v
    return out


SEED_MAX = 2**32 - 1
"""Largest seed: every generator (NumPy, torch) takes 0..2^32-1 the same way."""


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def validate(cfg: Config) -> None:
    """Check every value against its range where it is declared; a :class:`ConfigError` names the key."""
    if cfg.dim not in (2, 3):
        raise ConfigError(f"config key 'dim' must be 2 or 3, got {cfg.dim}")
    for key, sched in (("train.lr_decoder", cfg.train.lr_decoder), ("train.lr_latent", cfg.train.lr_latent)):
        if not (_finite(sched.initial) and sched.initial > 0):
            raise ConfigError(f"config key '{key}.initial' must be a positive finite learning rate, got "
                              f"{sched.initial}")
        if not (_finite(sched.factor) and sched.factor > 0):
            raise ConfigError(f"config key '{key}.factor' must be a positive finite multiplier, got "
                              f"{sched.factor}")
    if not (_finite(cfg.reconstruct.lr) and cfg.reconstruct.lr > 0):
        raise ConfigError(f"config key 'reconstruct.lr' must be a positive finite learning rate, got "
                          f"{cfg.reconstruct.lr}")
    if not (_finite(cfg.train.clamp) and cfg.train.clamp > 0):
        raise ConfigError(f"config key 'train.clamp' must be positive and finite (a clamp of 0 makes every "
                          f"loss 0), got {cfg.train.clamp}")
    if not (_finite(cfg.model.decoder.dropout) and 0.0 <= cfg.model.decoder.dropout < 1.0):
        raise ConfigError(f"config key 'model.decoder.dropout' must be in [0, 1), got "
                          f"{cfg.model.decoder.dropout}")
    for key, v in (("train.code_reg", cfg.train.code_reg), ("reconstruct.code_reg", cfg.reconstruct.code_reg),
                   ("reconstruct.init_std", cfg.reconstruct.init_std),
                   ("train.code_target", cfg.train.code_target)):
        if not (_finite(v) and v >= 0):
            raise ConfigError(f"config key '{key}' must be 0 or more and finite, got {v}")
    if cfg.train.code_target > 0 and not cfg.train.decoder_from:
        raise ConfigError("config key 'train.code_target' pulls the codes towards a trained autodecoder's; "
                          "name that run with --decoder-from RUN (train.decoder_from)")
    if cfg.train.amortise_unseen and not cfg.train.decoder_from:
        raise ConfigError("config key 'train.amortise_unseen' is about shapes an autodecoder run never saw; "
                          "name that run with --decoder-from RUN (train.decoder_from)")
    if not 0 <= cfg.train.seed <= SEED_MAX:
        raise ConfigError(f"config key 'train.seed' must be between 0 and {SEED_MAX}, got {cfg.train.seed}")
    if cfg.reconstruct.restarts < 1 or not 0.0 <= cfg.reconstruct.restart_at < 1.0:
        raise ConfigError("config keys 'reconstruct.restarts' must be >= 1 and 'reconstruct.restart_at' in "
                          f"[0, 1), got {cfg.reconstruct.restarts} and {cfg.reconstruct.restart_at}")
    if not (math.isfinite(cfg.reconstruct.robust_scale) and cfg.reconstruct.robust_scale > 0):
        raise ConfigError(f"config key 'reconstruct.robust_scale' must be positive and finite, got "
                          f"{cfg.reconstruct.robust_scale}")
    if cfg.reconstruct.schedule == "cosine" and cfg.reconstruct.patience > 0:
        raise ConfigError("config key 'reconstruct.patience' is for the step schedule; set it to 0 with "
                          "reconstruct.schedule: cosine")
    for key, v in (("train.epochs", cfg.train.epochs), ("train.shapes_per_batch", cfg.train.shapes_per_batch),
                   ("train.samples_per_shape", cfg.train.samples_per_shape),
                   ("model.latent.size", cfg.model.latent.size), ("mesh.resolution", cfg.mesh.resolution)):
        if v < 1:
            raise ConfigError(f"config key '{key}' must be at least 1, got {v}")
    split = cfg.train.batch_split
    if split != "auto" and not (isinstance(split, int) and split >= 1):
        raise ConfigError(f"config key 'train.batch_split' must be 'auto' or an integer >= 1, got {split!r}")
    if cfg.train.checkpoint_every < 1:
        raise ConfigError(f"config key 'train.checkpoint_every' must be at least 1, got "
                          f"{cfg.train.checkpoint_every}")
    if cfg.train.keep_checkpoints == 1 or cfg.train.keep_checkpoints < 0:
        raise ConfigError(f"config key 'train.keep_checkpoints' must be 0 (keep all) or at least 2 (the "
                          f"previous checkpoint is the fallback for a corrupt newest one), got "
                          f"{cfg.train.keep_checkpoints}")
    if not 0 <= cfg.model.decoder.fourier <= 16:
        raise ConfigError(f"config key 'model.decoder.fourier' must be between 0 and 16, got "
                          f"{cfg.model.decoder.fourier}")
    if not cfg.model.decoder.hidden:
        raise ConfigError("config key 'model.decoder.hidden' must list at least one layer width")
    n = len(cfg.model.decoder.hidden)
    for i in cfg.model.decoder.latent_in:
        if not 0 < i <= n:
            raise ConfigError(f"config key 'model.decoder.latent_in' has {i}; must be between 1 and {n}")
        d_in = cfg.model.latent.size + cfg.dim * (1 + 2 * cfg.model.decoder.fourier)
        if cfg.model.decoder.hidden[i - 1] <= d_in:
            width = cfg.model.decoder.hidden[i - 1]
            raise ConfigError(f"config key 'model.decoder.hidden': layer {i - 1} (width {width}) feeds the "
                              f"code re-injection at layer {i}, so it must be wider than code + coordinates "
                              f"({d_in}); widen it or shrink model.latent.size")
    from deepsdf_ad.models.sources import LATENT_SOURCES, latent_options

    if cfg.model.latent.source not in LATENT_SOURCES:
        raise ConfigError(
            f"unknown latent source '{cfg.model.latent.source}'; known: {', '.join(LATENT_SOURCES)}"
        )
    try:
        latent_options(cfg.model.latent)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "kwargs":
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v
    return out


def config_differences(old: Config, new: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: OLD -> NEW`` for every key whose value differs between two configs (``ignore``: keys left
    out)."""
    a, b = _flat(to_dict(old)), _flat(to_dict(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(a.keys() | b.keys())
            if k not in ignore and a.get(k) != b.get(k)]


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    from deepsdf_ad.data_prep.formats import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
