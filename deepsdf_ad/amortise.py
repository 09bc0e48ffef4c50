"""Amortised inference for a trained autodecoder: an encoder learns to give, in one pass, the codes that a
frozen autodecoder's decoder needs (``train.decoder_from``).

The end-to-end autoencoder (``shapes_cpu_ae``) learns its decoder through its encoder and, in the same 30
minutes, fits its shapes far worse than the autodecoder does (docs/quality.md). Taking the autodecoder's
decoder as it is and training only an encoder for it separates the two questions the comparison mixes: how
good a decoder each recipe learns, and what one encoder pass costs against optimising the code for the same
decoder (the amortisation gap, measured in the outcome). The run this makes is an ordinary encoder run:
``reconstruct --mode encode|encode+refine|optimise``, ``mesh`` and ``evaluate`` use it as any other.

The training loss is the sdf loss through the frozen decoder (what test-time optimisation minimises) plus
``train.code_target`` times the squared distance of each code to the autodecoder's learned code for the
shape, over the codes' variance (it steers the encoder towards codes the decoder was trained on). With
``train.amortise_unseen`` the encoder also trains on shapes the autodecoder never saw: their target rows
are NaN, and they get the sdf loss alone.
"""

from __future__ import annotations

import torch

from deepsdf_ad.config import Config
from deepsdf_ad.data_prep.formats import DataError
from deepsdf_ad.models import SDFModel


def take_decoder(model: SDFModel, cfg: Config, keys: list[str], device: torch.device) -> torch.Tensor:
    """Load the decoder of the autodecoder run ``cfg.train.decoder_from`` into ``model``, freeze it, and
    return that run's learned codes (S, L) in the order of ``keys`` (this run's training shapes), on
    ``device``.

    Refused (DataError, one line) unless the run is a table run with this config's decoder and code length
    that trained on every shape of ``keys`` (with ``cfg.train.amortise_unseen``: on at least one; the rows of
    the others are NaN)."""
    from deepsdf_ad.runs import Run, load_trained

    path = cfg.train.decoder_from
    source = Run(path)
    if not source.exists():
        raise DataError(f"{path}: not a run folder (train.decoder_from names the autodecoder run whose "
                        "decoder to take)")
    src_cfg, src_model = load_trained(source, torch.device("cpu"))
    if src_cfg.model.latent.source != "table":
        raise DataError(f"{path}: a '{src_cfg.model.latent.source}' run; train.decoder_from takes an "
                        "autodecoder (latent source 'table')")
    if src_cfg.model.decoder != cfg.model.decoder or src_cfg.dim != cfg.dim:
        raise DataError(f"{path}: its decoder differs from this config's model.decoder; use the same decoder "
                        "settings (and dim) as the run")
    if src_cfg.model.latent.size != cfg.model.latent.size:
        raise DataError(f"{path}: its codes have length {src_cfg.model.latent.size}, this config's "
                        f"model.latent.size is {cfg.model.latent.size}")
    src_keys = list(source.shapes()["keys"])
    rows = {k: i for i, k in enumerate(src_keys)}
    missing = [k for k in keys if k not in rows]
    if len(missing) == len(keys) or (missing and not cfg.train.amortise_unseen):
        raise DataError(f"{path}: {len(missing)} of the {len(keys)} training shapes were not in its training "
                        f"set (first: {missing[0]}); amortise it on the data it trained on"
                        + ("" if len(missing) == len(keys) else
                           ", or set train.amortise_unseen=true to train on the others without a code "
                           "target"))
    model.decoder.load_state_dict(src_model.decoder.state_dict())
    model.decoder.requires_grad_(False)
    codes = src_model.latent.all_codes().float()
    out = torch.full((len(keys), codes.shape[1]), float("nan"))
    seen = [i for i, k in enumerate(keys) if k in rows]
    out[seen] = codes[[rows[keys[i]] for i in seen]]
    return out.to(device)


def target_weight(weight: float, targets: torch.Tensor) -> float:
    """The factor of the mean squared code distance in the loss: ``weight`` (``train.code_target``) over the
    targets' (S, L) mean variance per dimension, so the pull does not depend on the autodecoder's code
    scale (over the shapes that have one)."""
    targets = targets[torch.isfinite(targets).all(dim=1)]
    spread = targets.var(dim=0, unbiased=False) if len(targets) > 1 else targets.pow(2)
    var = float(spread.mean())
    return weight / max(var, 1e-12)


def code_pull(codes: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
    """Squared distance of ``codes`` (B, L) to ``targets`` (B, L), summed over the rows whose target is known
    (not NaN) and divided by ``n`` x L (``n``: the shapes of the whole batch, so the ranks' shares add up to
    the batch's mean)."""
    known = torch.isfinite(targets).all(dim=1, keepdim=True)
    d = torch.where(known, (codes - targets.nan_to_num()).pow(2), torch.zeros((), device=codes.device))
    return d.sum() / (n * codes.shape[-1])
