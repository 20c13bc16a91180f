"""diagnostics: clean vs flipped losses and kept-set precision/recall, checked against a computation from the steps'
own outputs; it never changes what training computes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import pytorch_lightning as pl
import torch

from robustlearn.registry import STRATEGIES
from robustlearn.runner import fit
from robustlearn.strategies.base import Strategy
from tests.protocol_helpers import rows, smoke
from tests.test_resume import comparable_rows


class _Outputs(pl.Callback):
    """Every step's batch, per-sample loss and weights, and each epoch's subset."""

    def __init__(self):
        self.steps: list[list[tuple]] = []
        self.subsets: list = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.steps.append([])
        self.subsets.append(trainer.datamodule.train_subset)
        self.clean = trainer.datamodule.train_tensors()["y"] == trainer.datamodule.train_tensors()["y_clean"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        b = outputs["batch"]
        self.steps[-1].append((b["y"] == b["y_clean"], outputs["per_sample"], outputs["weights"]))


def _cat(epoch, i):
    return torch.cat([step[i] for step in epoch])


def test_clean_and_flipped_losses_match_the_steps(tmp_path):
    rec = _Outputs()
    result = fit(smoke(tmp_path, "strategies=[{name: gce}, {name: diagnostics}]", "noise.rate=0.4",
                       "trainer.epochs=3"), quiet=True, callbacks=[rec])
    r = rows(result["run_dir"])
    for epoch, row in zip(rec.steps, r):
        clean, loss = _cat(epoch, 0), _cat(epoch, 1).double()
        assert float(row["diagnostics/loss_clean"]) == pytest.approx(float(loss[clean].mean()), rel=1e-6)
        assert float(row["diagnostics/loss_flipped"]) == pytest.approx(float(loss[~clean].mean()), rel=1e-6)
    last = r[-1]
    assert float(last["diagnostics/loss_flipped"]) > float(last["diagnostics/loss_clean"])
    assert "diagnostics/batch_kept_precision" not in last  # nothing was dropped


def test_diagnostics_do_not_change_training(tmp_path):
    plain = fit(smoke(tmp_path / "a", "strategies=[{name: gce}]"), quiet=True)
    watched = fit(smoke(tmp_path / "b", "strategies=[{name: gce}, {name: diagnostics}]"), quiet=True)
    strip = lambda rs: [{k: v for k, v in x.items() if not k.startswith("diagnostics/")} for x in rs]
    watched_rows = comparable_rows(watched["run_dir"])
    assert "diagnostics/loss_clean" in watched_rows[0]
    assert strip(watched_rows) == comparable_rows(plain["run_dir"])


def test_small_loss_selection_keeps_a_cleaner_set_than_the_data(tmp_path):
    rec = _Outputs()
    result = fit(smoke(tmp_path, "strategies=[{name: example_peer, keep: 0.6}, {name: diagnostics}]",
                       "noise.rate=0.4", "trainer.epochs=3"), quiet=True, callbacks=[rec])
    r = rows(result["run_dir"])
    for epoch, row in zip(rec.steps, r):
        clean, kept = _cat(epoch, 0), _cat(epoch, 2) > 0
        precision = float((kept & clean).sum() / kept.sum())
        recall = float((kept & clean).sum() / clean.sum())
        assert float(row["diagnostics/batch_kept_precision"]) == pytest.approx(precision)
        assert float(row["diagnostics/batch_kept_recall"]) == pytest.approx(recall)
    share_clean = float(rec.clean.double().mean())
    assert float(r[-1]["diagnostics/batch_kept_precision"]) > share_clean + 0.1


def test_subset_precision_and_recall(tmp_path):
    rec = _Outputs()
    result = fit(smoke(tmp_path, "strategies=[{name: diagnostics}, {name: example_prune, fraction: 0.5}]",
                       "noise.rate=0.4", "trainer.epochs=3"), quiet=True, callbacks=[rec])
    r = rows(result["run_dir"])
    assert r[0].get("diagnostics/subset_precision", "") == ""  # epoch 0 trains on everything
    subset = rec.subsets[1]
    kept = torch.zeros_like(rec.clean)
    kept[subset] = True
    clean = rec.clean
    assert float(r[1]["diagnostics/subset_size"]) == 900
    assert float(r[1]["diagnostics/subset_precision"]) == pytest.approx(float((kept & clean).sum() / kept.sum()))
    assert float(r[1]["diagnostics/subset_recall"]) == pytest.approx(float((kept & clean).sum() / clean.sum()))


@STRATEGIES.register("test_kept_mask")
class _KeptMask(Strategy):
    """Keeps the even positions."""

    @dataclass
    class Params:
        pass

    def setup(self, trainer, pl_module, stage):
        self.mask = torch.arange(trainer.datamodule.train_size) % 2 == 0

    def kept_mask(self):
        return self.mask


def test_a_strategys_kept_mask_is_scored(tmp_path):
    rec = _Outputs()
    result = fit(smoke(tmp_path, "strategies=[{name: test_kept_mask}, {name: diagnostics}]", "trainer.epochs=1"),
                 quiet=True, callbacks=[rec])
    (row,) = rows(result["run_dir"])
    even = torch.arange(len(rec.clean)) % 2 == 0
    both = float((even & rec.clean).sum())
    assert float(row["diagnostics/test_kept_mask_kept_precision"]) == pytest.approx(both / float(even.sum()))
    assert float(row["diagnostics/test_kept_mask_kept_recall"]) == pytest.approx(both / float(rec.clean.sum()))
    assert not math.isnan(float(row["diagnostics/test_kept_mask_kept_recall"]))
