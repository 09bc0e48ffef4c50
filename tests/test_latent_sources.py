"""The latent-source seam: a new source is one subclass plus one registry line, and trains as the built-in
ones do (docs/training.md, *Adding a latent source*, shows the same toy source)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from deepsdf_ad.config import ConfigError, load_config
from deepsdf_ad.models import build_model
from deepsdf_ad.models.base import LatentSource, SourceOptions
from deepsdf_ad.models.sources import LATENT_SOURCES, register_latent_source
from deepsdf_ad.train import train
from tests.helpers import REPO, TINY
from tests.test_autoencoder import make_tiny_digits


@dataclass
class SharedOptions(SourceOptions):
    scale: float = 1.0

    def check(self) -> None:
        if self.scale <= 0:
            raise ValueError("model.latent.kwargs.scale must be positive")


class SharedCode(LatentSource):
    """A toy source: one learned code shared by every shape, times a fixed scale."""

    def __init__(self, num_shapes, dim, cfg, options):
        super().__init__()
        self.size, self.num_shapes, self.scale = cfg.size, num_shapes, options.scale
        self.code = nn.Parameter(torch.zeros(cfg.size))

    def codes(self, batch):
        return self.scale * self.code.expand(len(batch["index"]), -1)

    def all_codes(self):
        return self.scale * self.code.detach().expand(self.num_shapes, -1)


@pytest.fixture
def shared_source(monkeypatch):
    monkeypatch.setitem(LATENT_SOURCES, "shared", LATENT_SOURCES["table"])  # restored after the test
    register_latent_source("shared", SharedCode, SharedOptions)


def test_a_registered_source_builds_checks_its_options_and_trains(shared_source, tmp_path):
    cfg = load_config(REPO / "configs" / "digits_autodecoder.yaml",
                      [*TINY, "model.latent.source=shared", "model.latent.kwargs={scale: 2.0}",
                       "train.clamp=1.0"])  # an untrained decoder is past the 0.1 clamp everywhere
    model = build_model(2, cfg.model.decoder, cfg.model.latent, 5)
    assert isinstance(model.latent, SharedCode) and model.latent.scale == 2.0
    assert model.latent_size == cfg.model.latent.size and model.observed_mask([]) is None
    with pytest.raises(ConfigError, match="scale must be positive"):
        load_config(None, ["model.latent.source=shared", "model.latent.kwargs={scale: -1.0}"])
    with pytest.raises(ConfigError, match="unknown shared option 'size'"):
        load_config(None, ["model.latent.source=shared", "model.latent.kwargs={size: 3}"])
    run = train(cfg, make_tiny_digits(tmp_path, n=8), tmp_path / "run", epochs=1, device="cpu",
                progress=False)
    codes = run.codes()
    assert codes.shape == (6, cfg.model.latent.size)  # 6 training shapes of 8, all one code
    assert torch.count_nonzero(codes[0]) > 0 and torch.equal(codes[0], codes[-1])  # it learned, and is shared


def test_only_latent_sources_register():
    with pytest.raises(TypeError, match="not a LatentSource subclass"):
        register_latent_source("plain", nn.Linear)
    with pytest.raises(TypeError, match="abstract"):
        type("NoCodes", (LatentSource,), {})()


def test_the_readme_example_registers_a_source_that_trains(monkeypatch, tmp_path):
    """The toy source of the README's architecture section, run as printed there."""
    import re

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Architecture"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setitem(LATENT_SOURCES, "shared", LATENT_SOURCES["table"])  # restored after the test
    scope = {"dataclass": dataclass, "nn": nn, "torch": torch}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    assert LATENT_SOURCES["shared"].cls is scope["SharedCode"]
    cfg = load_config(REPO / "configs" / "digits_autodecoder.yaml",
                      [*TINY, "model.latent.source=shared", "train.clamp=1.0"])
    run = train(cfg, make_tiny_digits(tmp_path, n=8), tmp_path / "run", epochs=1, device="cpu",
                progress=False)
    codes = run.codes()
    assert torch.count_nonzero(codes[0]) > 0 and torch.equal(codes[0], codes[-1])
