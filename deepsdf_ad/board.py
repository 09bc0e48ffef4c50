"""TensorBoard event files of a training run (``train --tensorboard``, config key ``train.tensorboard``).

Beside ``RUN/metrics.jsonl``, ``RUN/tensorboard/`` gets one point per epoch of each number in its row (losses,
learning rates, seconds, points per second) and the norms of the training codes (mean, max, histogram) for
sources whose codes are learned parameters (a table or a grid; an encoder's stored encodings change only at
checkpoints). View them with ``tensorboard --logdir RUN/tensorboard``.

TensorBoard is an optional dependency (``pip install 'deepsdf-ad[tensorboard]'``); asking for it without the
package is a one-line :class:`~deepsdf_ad.config.ConfigError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from deepsdf_ad.config import ConfigError
from deepsdf_ad.runs import TENSORBOARD

TAGS = {"loss": "loss/total", "sdf_loss": "loss/sdf", "reg_loss": "loss/code_reg", "lr_decoder": "lr/decoder",
        "lr_latent": "lr/latent", "seconds": "time/epoch_seconds", "points_per_s": "time/points_per_s"}
"""TensorBoard tag of each key of a ``metrics.jsonl`` row (any other number: ``train/<key>``)."""
INSTALL = "pip install 'deepsdf-ad[tensorboard]'"


def summary_writer():
    """``torch.utils.tensorboard.SummaryWriter``, or a :class:`ConfigError` saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"train.tensorboard (--tensorboard) needs the tensorboard package, which is not "
                          f"installed: {INSTALL}") from None
    return SummaryWriter


class EpochBoard:
    """The TensorBoard writer of one run folder, written to once per epoch."""

    def __init__(self, run_path: str | os.PathLike, start: int = 0):
        """``start``: the epoch training goes on from; points of later epochs (left by an interrupted run
        whose work is redone) are dropped from the event files."""
        writer = summary_writer()
        purge = start + 1 if start else None
        self.writer = writer(log_dir=str(Path(run_path) / TENSORBOARD), purge_step=purge)

    def log(self, row: dict, model=None) -> None:
        """Write one ``metrics.jsonl`` row at step ``row['epoch']``, and the code norms of ``model`` (an
        :class:`~deepsdf_ad.models.SDFModel`) when its codes are learned parameters; then flush."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(TAGS.get(key, f"train/{key}"), value, step)
        if model is not None and model.latent.optimised_at_test_time:
            norms = model.latent.all_codes().float().norm(dim=1).cpu()
            if len(norms):
                self.writer.add_scalar("codes/norm_mean", float(norms.mean()), step)
                self.writer.add_scalar("codes/norm_max", float(norms.max()), step)
                self.writer.add_histogram("codes/norms", norms, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
