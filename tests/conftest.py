from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

from tests.sync_guard import guarded_step  # noqa: E402,F401  (the host-sync fixture, for every test file)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SMOKE = CONFIGS / "experiments" / "synthetic_smoke.yaml"
FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def smoke_config() -> Path:
    return SMOKE


needs_fmnist = pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST files not installed"
)


@pytest.fixture
def isolated_data(monkeypatch, tmp_path):
    """No $ROBUSTLEARN_DATA, no mirror, the cache under tmp_path, and no system directory."""
    monkeypatch.delenv("ROBUSTLEARN_DATA", raising=False)
    monkeypatch.delenv("ROBUSTLEARN_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    from robustlearn.data.sources.idx import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "system_dirs", ())
    return monkeypatch
