"""deepsdf-ad: neural signed-distance fields, autodecoder vs autoencoder.

The Python API (:mod:`deepsdf_ad.api`), imported on first use so that ``import deepsdf_ad`` stays light (no
torch)::

    from deepsdf_ad import load_run, mesh_shape, prep_meshes, reconstruct

``deepsdf_ad.reconstruct`` is the API function, not the module of the same name: import that module's
functions by their full path (``from deepsdf_ad.reconstruct import find_codes``).
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Literal, get_args

Precision = Literal["fp32", "bf16", "fp16", "auto"]
PRECISIONS = get_args(Precision)
"""Arithmetic of the decoder: fp32, bf16 or fp16 autocast, or 'auto': bf16 where the processor computes it
natively (a CUDA GPU with bf16; an x86 CPU with AVX512-BF16 or AMX), else fp32 (see
:func:`deepsdf_ad.device.resolve_precision`). Kept here, free of imports, so the CLI's parser can list
them."""

UP_CHOICES = ("x", "y", "z", "-x", "-y", "-z")
"""Values of ``reconstruct --up``: the input's axis that points up (away from the floor). Kept here, free of
imports, so the CLI's parser can list them."""

DIST_NAME = "deepsdf-ad"
"""The distribution's name (``pip install deepsdf-ad``)."""
API = ("load_run", "reconstruct", "mesh_shape", "prep_meshes", "LoadedRun")
"""Names of :mod:`deepsdf_ad.api` that the package exports, each imported on first access."""


def _version() -> str:
    """The version of the code that runs: the ``pyproject.toml`` beside the package in a checkout (an editable
    install's metadata may be another checkout's, or older), else the installed distribution's metadata."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(errors="replace")
        project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        if project and re.search(rf'^name\s*=\s*"{DIST_NAME}"', project.group(1), re.M):
            found = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.M)
            if found:
                return found.group(1)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DIST_NAME)
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        value = _version()
        globals()[name] = value
        return value
    if name in API:
        from deepsdf_ad import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "__version__", *API})


class _Package(types.ModuleType):
    """The package's module type: its ``reconstruct`` is always the API function. The import system sets a
    package's attribute to each submodule it loads, and ``deepsdf_ad/reconstruct.py`` shares the name: without
    this, ``from deepsdf_ad import reconstruct`` would give the module once anything had imported it."""

    @property
    def reconstruct(self):
        from deepsdf_ad.api import reconstruct

        return reconstruct

    @reconstruct.setter
    def reconstruct(self, module) -> None:
        pass  # the submodule stays in sys.modules ("from deepsdf_ad.reconstruct import ..." finds it there)


sys.modules[__name__].__class__ = _Package
