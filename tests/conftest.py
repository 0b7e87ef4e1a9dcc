"""Shared fixtures. The real dataset root comes from ZFREPRO_DATA (CI points it at the offline
Imagenette copy); caches and runs go to temporary or cache directories, never into the data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = os.environ.get("ZFREPRO_DATA")
    if not root:
        pytest.skip("ZFREPRO_DATA is not set: point it at an ImageFolder with train/ and val/ (see README)")
    path = Path(root)
    if not (path / "train").is_dir():
        pytest.skip(f"ZFREPRO_DATA={root} has no train/ folder")
    return path


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache directory for this test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("ZFREPRO_CACHE", str(d))
    return d
