"""Noisy-label methods together: a robust loss + ELR's penalty + diagnostics in one run, bad parameters as exit-2
errors, and a run with ELR and truncated GCE that resumes to the metrics of an uninterrupted one."""

from __future__ import annotations

import subprocess
import sys

import pytest

import robustlearn.strategies.noisy  # noqa: F401  (registers the methods)
from robustlearn.config import load_config
from robustlearn.errors import ConfigError
from robustlearn.runner import fit
from tests.conftest import ROOT, SMOKE
from tests.protocol_helpers import assert_resumes_exactly, rows, smoke


def test_robust_loss_with_elr_and_diagnostics(tmp_path):
    result = fit(smoke(tmp_path, "strategies=[{name: nce_rce}, {name: elr}, {name: diagnostics}]",
                       "noise.rate=0.4", "trainer.epochs=2"), quiet=True)
    assert result["status"] == "completed" and result["oracle"] is None
    last = rows(result["run_dir"])[-1]
    for key in ("train/loss_main", "elr/penalty", "diagnostics/loss_clean", "diagnostics/loss_flipped"):
        assert last[key] != ""
    assert float(last["train/loss"]) == pytest.approx(float(last["train/loss_main"]) + float(last["elr/penalty"]),
                                                      rel=1e-5)


def test_two_loss_providers_is_a_clear_error():
    with pytest.raises(ConfigError, match="nce_rce and taylor_ce both provide the training loss"):
        load_config(SMOKE, ["strategies=[{name: nce_rce}, {name: taylor_ce}]"])


def test_bad_parameter_exits_2_naming_the_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "robustlearn", "fit", str(SMOKE), "strategies=[{name: gce}, {name: elr, lam: -1}]",
         f"output.root={tmp_path}", "--quiet"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "strategies[1].lam" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_elr_and_truncated_gce_resume_exactly(tmp_path):
    assert_resumes_exactly(tmp_path, ["strategies=[{name: truncated_gce, start_epoch: 1, refresh_every: 1}, "
                                      "{name: elr}]", "trainer.epochs=4", "noise.rate=0.4"])
