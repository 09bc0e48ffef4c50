"""Whether a training run learns: read from its SDF loss per epoch (``metrics.jsonl``), by ``train`` while it
runs (one warning line) and by ``compare`` and the article afterwards (named in their reports).

A decoder that starts with every prediction beyond the clamp, or an encoder that sends every shape to code 0,
stays flat from the first epoch (0.3% in 10 epochs, the scenes grid autoencoder of seed 2 before the decoder's
last layer started without a bias); the healthy runs of the article's build fell by 11% to 55% in that time.
"""

from __future__ import annotations

import math

STALL_EPOCHS = 10
"""After this many epochs, a run whose SDF loss has not fallen by :data:`STALL_DROP` of its first epoch's is
reported as not learning (:func:`stall_message`)."""
STALL_DROP = 0.02


def stall_message(sdf_losses: list[float]) -> str | None:
    """The warning for a run whose SDF loss per epoch (from the first) has not fallen by STALL_DROP of the
    first epoch's within STALL_EPOCHS epochs; None while it learns or before STALL_EPOCHS epochs."""
    if len(sdf_losses) < STALL_EPOCHS:
        return None
    first, now = sdf_losses[0], min(sdf_losses[:STALL_EPOCHS])
    if not (math.isfinite(first) and first > 0) or now < first * (1 - STALL_DROP):
        return None
    return (f"the SDF loss has not fallen in {STALL_EPOCHS} epochs ({first:.4g} at the first, "
            f"{sdf_losses[STALL_EPOCHS - 1]:.4g} at epoch {STALL_EPOCHS}): this run is not learning; train "
            "it again with another --seed, or lower the learning rates")


def run_losses(rows: list[dict]) -> list[float]:
    """The SDF loss per epoch of a run's metrics rows (the total loss where a row has no SDF term)."""
    return [r.get("sdf_loss", r.get("loss", math.nan)) for r in rows]
