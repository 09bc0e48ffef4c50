"""Device names and moves, checked without a GPU (a GPU run of benchmarks/gpu_check.py covers the rest)."""

import torch

from deepsdf_ad import device as device_mod
from deepsdf_ad.data import to_device


class _OnGPU:
    """Stands for a tensor already on ``cuda:0``: pinning or copying it is the bug."""

    device = torch.device("cuda", 0)

    def pin_memory(self):
        raise AssertionError("pinned a tensor that is already on the GPU")

    def to(self, *args, **kwargs):
        raise AssertionError("copied a tensor that is already on the GPU")


def test_cuda_resolves_to_an_indexed_device(monkeypatch):
    # tensors report "cuda:0"; a bare "cuda" device compares unequal to it and sent tensors back through
    # pinned host memory (train --device cuda failed: "cannot pin 'torch.cuda.LongTensor'")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for name in ("cuda", "auto"):
        assert device_mod.resolve_device(name) == torch.device("cuda", 0)
    assert device_mod.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert device_mod.resolve_device("cpu") == torch.device("cpu")


def test_to_device_leaves_a_tensor_already_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # a bare "cuda" is GPU 0 here
    t = _OnGPU()
    assert to_device(t, torch.device("cuda")) is t
    assert to_device(t, torch.device("cuda", 0)) is t
    cpu = torch.zeros(3)
    assert to_device(cpu, torch.device("cpu")) is cpu
