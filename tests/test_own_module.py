"""Strategies outside RobustClassifier: a user's own LightningModule, network, optimiser, plain Trainer and DataLoader
calls `strategy_step` and gets GCE + an ELR-style penalty + class weights, with the per-term logging."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlearn.strategies.noisy.gce import GCE
from robustlearn.strategies.step import strategy_step
from tests.strategy_examples import ExampleClassWeight, ExampleELR


class MyModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
        self.first = None

    def training_step(self, batch, batch_idx):
        out = strategy_step(self, batch, self.net)
        if self.first is None:
            self.first = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in out.items()}
        return out

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=0.2, momentum=0.9)


def _data(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    x = centres[y] + torch.randn(n, 2, generator=g)
    return x, y, torch.arange(n)


def test_a_users_module_trains_with_strategies():
    x, y, index = _data()
    loader = DataLoader(TensorDataset(x, y, index), batch_size=50, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    lam, beta, q = 3.0, 0.7, 0.7
    strategies = [GCE(GCE.Params(q=q)), ExampleELR(ExampleELR.Params(lam=lam, beta=beta)),
                  ExampleClassWeight(ExampleClassWeight.Params(label=0, weight=2.0))]
    module = MyModule()
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", callbacks=strategies, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    metrics = trainer.callback_metrics
    assert {"train/loss_main", "example_elr/penalty"} <= set(metrics)
    assert float(metrics["example_elr/penalty"]) < 0

    # The first step against the formula: w * GCE summed over B, plus lam * mean log(1 - <t, p>) with
    # t = (1 - beta) p (the targets start at zero).
    first = module.first
    logits, batch = first["logits"], first["batch"]
    p = torch.softmax(logits, 1)
    gce = (1 - p.gather(1, batch["y"][:, None]).squeeze(1) ** q) / q
    w = torch.where(batch["y"] == 0, 2.0, 1.0)
    pc = p.clamp(1e-4, 1 - 1e-4)
    t = (1 - beta) * pc / pc.sum(1, keepdim=True)
    expected = (w * gce).sum() / len(gce) + lam * torch.log(1 - (t * pc).sum(1)).mean()
    torch.testing.assert_close(first["per_sample"], gce)
    assert float(first["loss"]) == pytest.approx(float(expected), rel=1e-5)

    with torch.no_grad():
        acc = (module.net(x).argmax(1) == y).float().mean()
    assert acc > 0.9
