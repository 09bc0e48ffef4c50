"""The registry of latent sources: a name (``model.latent.source``) -> the source's class and its options
dataclass (``model.latent.kwargs``; None: it takes none). Adding a source is one module with a
:class:`~deepsdf_ad.models.base.LatentSource` subclass plus one line here, or one call of
:func:`register_latent_source` from outside the package.

- ``table``: the autodecoder, one learned code per training shape (:mod:`~deepsdf_ad.models.table`);
- ``pointnet``: the autoencoder, a PointNet encoder (:mod:`~deepsdf_ad.models.pointnet`);
- ``grid`` and ``pointnet_grid``: the same two with a grid of local codes per shape or scene
  (:mod:`~deepsdf_ad.models.grid`, :mod:`~deepsdf_ad.models.pointnet_grid`).
"""

from __future__ import annotations

from typing import NamedTuple

from deepsdf_ad.models.base import LatentConfig, LatentSource, SourceOptions, parse_options
from deepsdf_ad.models.grid import GridConfig, LatentGrid
from deepsdf_ad.models.pointnet import PointNetConfig, PointNetEncoder
from deepsdf_ad.models.pointnet_grid import PointNetGridConfig, PointNetGridEncoder
from deepsdf_ad.models.table import LatentTable


class SourceEntry(NamedTuple):
    cls: type[LatentSource]
    """Built as ``cls(num_shapes, dim, cfg, options)``."""
    options: type[SourceOptions] | None


LATENT_SOURCES: dict[str, SourceEntry] = {
    "table": SourceEntry(LatentTable, None),
    "pointnet": SourceEntry(PointNetEncoder, PointNetConfig),
    "grid": SourceEntry(LatentGrid, GridConfig),
    "pointnet_grid": SourceEntry(PointNetGridEncoder, PointNetGridConfig),
}


def register_latent_source(name: str, cls: type[LatentSource],
                           options: type[SourceOptions] | None = None) -> None:
    """Make ``model.latent.source: name`` build ``cls`` (options: its ``model.latent.kwargs`` dataclass)."""
    if not (isinstance(cls, type) and issubclass(cls, LatentSource)):
        raise TypeError(f"latent source '{name}': {cls!r} is not a LatentSource subclass")
    if options is not None and not issubclass(options, SourceOptions):
        raise TypeError(f"latent source '{name}': options {options!r} must subclass SourceOptions")
    LATENT_SOURCES[name] = SourceEntry(cls, options)


def _entry(name: str) -> SourceEntry:
    if name not in LATENT_SOURCES:
        raise KeyError(f"unknown latent source '{name}'; known: {', '.join(LATENT_SOURCES)}")
    return LATENT_SOURCES[name]


def optimised_source(source: str) -> bool:
    """Whether a latent source finds a new shape's code by optimisation (the autodecoders) rather than by an
    encoder pass; unknown sources (a run from elsewhere) count as encoders."""
    entry = LATENT_SOURCES.get(source)
    return entry is not None and entry.cls.optimised_at_test_time


def latent_options(cfg: LatentConfig) -> SourceOptions | None:
    """``cfg.kwargs`` checked against the source's options dataclass (ValueError naming the key)."""
    entry = _entry(cfg.source)
    if entry.options is None:
        if cfg.kwargs:
            raise ValueError(f"latent source '{cfg.source}' takes no model.latent.kwargs, got "
                             f"{', '.join(map(str, cfg.kwargs))}")
        return None
    return parse_options(entry.options, cfg.kwargs, cfg.source)


def build_latent_source(cfg: LatentConfig, num_shapes: int, dim: int) -> LatentSource:
    return _entry(cfg.source).cls(num_shapes, dim, cfg, latent_options(cfg))
