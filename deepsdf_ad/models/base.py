"""The latent-source seam: where a shape's code comes from. Every source is a :class:`LatentSource`;
training, reconstruction and meshing talk to this class and never ask which source they hold.

A source maps a batch to codes (B, L) with :meth:`~LatentSource.codes` and returns the codes of the
training shapes with :meth:`~LatentSource.all_codes` (row order of ``RUN/shapes.json``). A source with a
grid of local codes also says how a point is decoded from a code, what the code regulariser is, which
entries a reconstruction may change and where the code is empty; a global source keeps the defaults here.
Sources are registered by name in :mod:`deepsdf_ad.models.sources`.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from deepsdf_ad.typed import ConfigError, from_dict


@dataclass
class LatentConfig:
    source: str = "table"
    """Latent source: 'table' (autodecoder), 'pointnet' (autoencoder), 'grid' (autodecoder with a grid of
    local codes) or 'pointnet_grid' (autoencoder pooling into a grid of local codes); see
    :mod:`deepsdf_ad.models.sources`."""
    size: int = 256
    """Length of each code (for the grid sources: of each cell corner's code)."""
    init_std: float = 1.0
    """Table codes start as N(0, (init_std / sqrt(size))^2), DeepSDF's CodeInitStdDev."""
    max_norm: float | None = 1.0
    """Table codes are renormalised to at most this norm when looked up (DeepSDF's CodeBound); null = off.
    Encoder codes are not bounded (the code regulariser still applies to them)."""
    kwargs: dict = field(default_factory=dict)
    """Extra arguments of the source, checked against its options dataclass: for 'pointnet' the fields of
    :class:`~deepsdf_ad.models.pointnet.PointNetConfig`; for 'grid' and 'pointnet_grid' those of
    :class:`~deepsdf_ad.models.grid.GridConfig` and
    :class:`~deepsdf_ad.models.pointnet_grid.PointNetGridConfig`."""


class SourceOptions:
    """Base of a source's options dataclass (``model.latent.kwargs``): types are checked from the fields'
    annotations; :meth:`check` adds the checks of values (ranges) and raises ValueError."""

    def check(self) -> None:
        """Raise ValueError naming the key when a value is out of range."""


def parse_options(cls: type[SourceOptions], kwargs: dict, source: str) -> SourceOptions:
    """``model.latent.kwargs`` -> the options dataclass ``cls`` of latent source ``source``; an unknown key,
    a value of the wrong type or out of range raise ValueError naming it."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        raise ValueError(f"unknown {source} option '{unknown[0]}' in model.latent.kwargs; known: "
                         f"{', '.join(names)}")
    try:
        opts = from_dict(cls, kwargs, "model.latent.kwargs")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    opts.check()
    return opts


class LatentSource(nn.Module, metaclass=abc.ABCMeta):
    """Where codes come from (see the module's docstring). Subclasses set the class attributes and
    implement :meth:`codes` and :meth:`all_codes`; the rest has a global code's defaults.

    Class attributes:

    - ``optimised_at_test_time``: a new shape's code is found by optimisation (an autodecoder), not by
      :meth:`encode`;
    - ``per_shape_parameters``: the source holds parameters per training shape (distributed training
      gathers their gradients row by row instead of wrapping them in DDP, see :mod:`deepsdf_ad.distributed`);
    - ``input_points``: points per shape that :meth:`codes` reads from ``batch['points']`` (0: it reads only
      ``batch['index']``); ``augment``: how training perturbs them (see :mod:`deepsdf_ad.inputs`).
    """

    optimised_at_test_time: bool = True
    per_shape_parameters: bool = False
    size: int
    """Length of one code (a grid source: of one corner's code)."""

    @property
    def input_points(self) -> int:
        return 0

    @property
    def augment(self) -> dict:
        return {}

    @abc.abstractmethod
    def codes(self, batch: dict) -> torch.Tensor:
        """The codes (B, L) of a batch: ``batch['index']`` (B,) long, and ``batch['points']`` (B, N, dim) for
        a source with ``input_points``."""

    @abc.abstractmethod
    def all_codes(self) -> torch.Tensor:
        """The codes of the training shapes (S, L), detached."""

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        """``points`` (B, N, dim) -> codes (B, L): only sources that are not optimised at test time."""
        raise TypeError(f"latent source {type(self).__name__} has no encoder; its codes are optimised")

    def set_training_codes(self, codes: torch.Tensor) -> None:
        """Store the training shapes' codes (an encoder's encodings, written at every checkpoint); a source
        whose codes are its parameters ignores this."""

    @property
    def code_length(self) -> int:
        """Length L of one shape's code (a grid: the flattened grid)."""
        return self.size

    def decode_points(self, decoder: nn.Module, codes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """sdf (B, N) at ``points`` (B, N, dim) from ``codes`` (B, L): one code per shape, shared by its
        points."""
        return decoder(codes[:, None, :], points)

    def penalty(self, codes: torch.Tensor) -> torch.Tensor:
        """The code regulariser per shape (B,): ||z||^2."""
        return codes.pow(2).sum(dim=-1)

    def observed_mask(self, points: list[torch.Tensor]) -> torch.Tensor | None:
        """Which entries of the codes (B, L) a reconstruction from B sets of observed near-surface points
        (each (M_i, dim)) may change; None: all."""
        return None

    def occupied(self, code: torch.Tensor):
        """For one code (L,): a function of points (M, dim) -> bool (M,), False where the code is empty (the
        mesher skips those cells); None when every point is decoded."""
        return None
