"""deepsdf-ad: neural signed-distance fields, autodecoder vs autoencoder."""

from typing import Literal, get_args

Precision = Literal["fp32", "bf16", "fp16", "auto"]
PRECISIONS = get_args(Precision)
"""Arithmetic of the decoder: fp32, bf16 or fp16 autocast, or 'auto': bf16 where the processor computes it
natively (a CUDA GPU with bf16; an x86 CPU with AVX512-BF16 or AMX), else fp32 (see
:func:`deepsdf_ad.device.resolve_precision`). Kept here, free of imports, so the CLI's parser can list them."""

UP_CHOICES = ("x", "y", "z", "-x", "-y", "-z")
"""Values of ``reconstruct --up``: the input's axis that points up (away from the floor). Kept here, free of
imports, so the CLI's parser can list them."""
