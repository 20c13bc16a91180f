"""PES (Bai et al. 2021): the plan, the class balance by hand, refinement passes that train only the renewed layers and
leave a classifier that predicts, the confident set cleaner than the data, and exact resume across the refinement."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from robustlearn.runner import fit
from robustlearn.strategies.noisy.pes import PES, class_balance, first_stage, renew, weight_layers
from tests.protocol_helpers import (
    Recorder,
    assert_bad_strategy_parameter,
    assert_kept_set_cleaner,
    assert_resumes_exactly,
    rows,
    smoke,
)


def test_plan_and_class_balance():
    params = PES.Params()
    assert (first_stage(params.t1, 200, PES.t1_share), params.t2, params.t3) == (25, 7, 5)  # official CIFAR-10
    assert first_stage(None, 8, PES.t1_share) == 1 and first_stage(3, 8, PES.t1_share) == 3
    assert PES(PES.Params(renew_layers=2)).refinements() == [(3, 7), (1, 5)]
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
    assert_bad_strategy_parameter("{name: pes, t2: -1}", "t2")
    assert_bad_strategy_parameter("{name: pes, t1: 2}", "t1")  # the smoke run has 2 epochs


class _Layers(pl.Callback):
    """The first and last weight layers' weights after each epoch's last step (before any epoch-end hook) and at the
    start of each epoch (after every hook of the epoch before)."""

    def __init__(self):
        self.trained, self.started = [], []

    @staticmethod
    def _copy(pl_module):
        layers = weight_layers(pl_module.net)
        return layers[0].weight.detach().clone(), layers[-1].weight.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == trainer.num_training_batches - 1:
            self.trained.append(self._copy(pl_module))

    def on_train_epoch_start(self, trainer, pl_module):
        self.started.append(self._copy(pl_module))


def test_refinement_trains_only_the_renewed_layers_and_leaves_a_classifier_that_predicts(tmp_path):
    """40 % noise, a 3-layer MLP: 2 epochs of CE, then the official 7 + 5 refinement passes between epochs 1 and 2
    (pes_lr raised to 0.01: a pass here is 28 steps, the official 1e-4 is for passes of 390), then confident
    training. The refinement leaves the first layer as epoch 1 ended and replaces the classifier; the refined network
    agrees with the noisy label on most training samples (above half; 4 classes), and the confident set is cleaner
    than the data."""
    rec, layers = Recorder(), _Layers()
    result = fit(smoke(tmp_path, "noise.rate=0.4", "trainer.epochs=4", "model.hidden=[32, 32]",
                       "strategies=[{name: pes, t1: 2, pes_lr: 0.01}]", "output.save_checkpoint=false"),
                 quiet=True, callbacks=[rec, layers])
    assert result["status"] == "completed", result["error"]
    table = rows(result["run_dir"])
    assert [float(r["pes/stage"]) for r in table] == [1, 1, 2, 2]
    assert result["best_epoch"] >= 2  # chosen in stage 2: the network PES delivers
    assert [bool(r.get("pes/refine_loss")) for r in table] == [False, True, False, False]
    (first_trained, last_trained), (first_refined, last_refined) = layers.trained[1], layers.started[2]
    assert torch.equal(first_trained, first_refined) and not torch.equal(last_trained, last_refined)
    assert not torch.equal(layers.trained[2][0], first_refined)  # confident training moves every layer again
    assert float(table[2]["pes/confident_share"]) > 0.5
    assert_kept_set_cleaner(rec)


RESUME = ["strategies=[{name: pes, t1: 1, t2: 2, t3: 1, pes_lr: 0.01}]", "noise.rate=0.4", "trainer.epochs=4"]


def test_resumes_exactly_after_the_refinement(tmp_path):
    assert_resumes_exactly(tmp_path, RESUME, stop_epoch=1)


def test_resumes_exactly_on_the_confident_samples(tmp_path):
    assert_resumes_exactly(tmp_path, RESUME, stop_epoch=3)
