"""PES (Bai et al. 2021): the phases, the class balance by hand, refinement that trains only the renewed layers, the
confident set cleaner than the data, and exact resume across the phases."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from robustlearn.runner import fit
from robustlearn.strategies.noisy.pes import PES, class_balance, epochs_plan, renew, weight_layers
from tests.protocol_helpers import (
    Recorder,
    assert_bad_strategy_parameter,
    assert_kept_set_cleaner,
    assert_resumes_exactly,
    rows,
    smoke,
)


def test_plan_and_class_balance():
    assert epochs_plan(PES.Params(), 200) == (25, 7, 5)  # the official CIFAR-10 plan
    assert epochs_plan(PES.Params(), 8) == (1, 1, 1)
    w = class_balance(torch.tensor([0, 0, 0, 1, 2, 2]), 4)  # counts 3, 1, 2, 0: mean of present 2
    assert w.tolist() == pytest.approx([2 / 3, 2.0, 1.0, 0.0])


def test_renew_resets_only_the_last_layers():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8),
                        nn.Linear(8, 3))
    before = [p.detach().clone() for p in net.parameters()]
    params = renew(net, 2, seed=0)
    after = list(net.parameters())
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])  # the first Linear
    assert not torch.equal(before[4], after[4]) and not torch.equal(before[8], after[8])  # the last two Linears
    assert len(params) == 6 and len(weight_layers(net)) == 3


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: pes, pes_lr: 0}", "pes_lr")
    assert_bad_strategy_parameter("{name: pes, t1: 1, t2: 1, t3: 1}", "t1")  # the smoke run has 2 epochs


class _FirstLayer(pl.Callback):
    """The first weight layer's weights at the end of every epoch."""

    def __init__(self):
        self.snapshots = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.snapshots.append(weight_layers(pl_module.net)[0].weight.detach().clone())


def test_phases_refinement_and_a_cleaner_confident_set(tmp_path):
    """40 % noise, 6 epochs, a 3-layer MLP; pes_lr raised to 0.01 for one-epoch refinements of 29 steps (the official
    1e-4 is for 7 + 5 epochs of 390 steps)."""
    rec, first = Recorder(), _FirstLayer()
    result = fit(smoke(tmp_path, "noise.rate=0.4", "trainer.epochs=6", "model.hidden=[32, 32]",
                       "strategies=[{name: pes, t1: 2, t2: 1, t3: 1, pes_lr: 0.01}]",
                       "output.save_checkpoint=false"), quiet=True, callbacks=[rec, first])
    assert result["status"] == "completed", result["error"]
    assert [float(r["pes/phase"]) for r in rows(result["run_dir"])] == [1, 1, 2, 3, 4, 4]
    # refinement epochs 2 and 3 leave the first layer as it was; training on confident samples moves it again
    assert torch.equal(first.snapshots[1], first.snapshots[2]) and torch.equal(first.snapshots[2], first.snapshots[3])
    assert not torch.equal(first.snapshots[3], first.snapshots[4])
    assert_kept_set_cleaner(rec)


RESUME = ["strategies=[{name: pes, t1: 1, t2: 1, t3: 1}]", "noise.rate=0.4", "trainer.epochs=5"]


def test_resumes_exactly_in_a_refinement(tmp_path):
    assert_resumes_exactly(tmp_path, RESUME, stop_epoch=2)


def test_resumes_exactly_on_the_confident_samples(tmp_path):
    assert_resumes_exactly(tmp_path, RESUME, stop_epoch=4)
