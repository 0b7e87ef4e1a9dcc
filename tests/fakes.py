"""Test doubles shared by several test modules."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class FakeInputs(Dataset):
    """A stand-in for zfrepro.data.ModelInputs over random images (label i % classes)."""

    def __init__(self, n: int = 12, size: int = 64, classes: int = 10):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.labels = [i % classes for i in range(n)]
        self.class_names = [f"c{i}" for i in range(classes)]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.labels[i]

    def batch(self, idx):
        return self.x[list(idx)]

    def to_display(self, x):
        return (x * 0.2 + 0.5).clamp(0, 1)
