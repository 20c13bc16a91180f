"""The platform's accuracy claim on real Fashion-MNIST (slow: about two minutes on 2 CPU cores).

Run with `make test-slow`; the numbers for three seeds are in docs/performance.md.
"""

from __future__ import annotations

import pytest

from robustlearn.config import load_config
from robustlearn.runner import fit
from tests.conftest import CONFIGS, needs_fmnist


@pytest.mark.slow
@needs_fmnist
def test_fmnist_cnn_five_epochs_reaches_90_percent(tmp_path):
    cfg = load_config(CONFIGS / "experiments" / "fmnist_ce.yaml", [f"output.root={tmp_path}"])
    result = fit(cfg, quiet=True)
    assert result["status"] == "completed" and result["epochs_done"] == 5
    assert result["test_acc_last"] >= 0.90
    assert result["test_acc_at_best_val"] >= 0.90
