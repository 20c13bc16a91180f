"""One worked example strategy per kind, as in docs/design.md ("Writing a strategy"); the protocol tests use them.

Kinds: a loss, weights, a penalty with per-sample state, a batch replacement, an epoch subset, an owned network.
They are small on purpose; the real methods live under robustlearn/strategies/.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.owned import OwnedNetwork
from robustlearn.strategies.scoring import scoring


@STRATEGIES.register("example_mae")
class ExampleMAE(Strategy):
    """Loss: mean absolute error between softmax and one-hot, sum_k |q_k - p_k| = 2 (1 - p_y)."""

    provides_loss = True

    def loss(self, logits, batch, module):
        p_y = torch.softmax(logits.float(), dim=1).gather(1, batch["y"][:, None]).squeeze(1)
        return 2.0 * (1.0 - p_y)


@STRATEGIES.register("example_class_weight")
class ExampleClassWeight(Strategy):
    """Weights: samples observed as class `label` count `weight` times, the others once."""

    @dataclass
    class Params:
        label: int = 0
        weight: float = 2.0

    def weights(self, per_sample, logits, batch, weights, module):
        return weights * torch.where(batch["y"] == self.params.label, self.params.weight, 1.0)


@STRATEGIES.register("example_elr")
class ExampleELR(Strategy):
    """Penalty with per-sample state: ELR's lam * mean_i log(1 - <t_i, p_i>), t_i <- beta t_i + (1 - beta) p_i
    (Liu et al. 2020); t lives in a PerSampleBuffer and is checkpointed."""

    state_attrs = ("targets",)

    @dataclass
    class Params:
        lam: float = 3.0
        beta: float = 0.7

    def __init__(self, params=None, position=0):
        super().__init__(params, position)
        self.targets = PerSampleBuffer()

    def penalty(self, logits, batch, module):
        p = torch.softmax(logits.float(), dim=1).clamp(1e-4, 1.0 - 1e-4)
        t = self.targets.ensure(module.trainer, shape=p.shape[1:])
        idx = batch["index"]
        new = self.params.beta * t[idx] + (1.0 - self.params.beta) * (p / p.sum(1, keepdim=True)).detach()
        t.update(idx, new)
        return self.params.lam * torch.log(1.0 - (new * p).sum(1)).mean()


@STRATEGIES.register("example_presample")
class ExamplePresample(Strategy):
    """Batch replacement: draw B = factor * b samples, score them without gradient in eval mode, train on b of them
    drawn with replacement with p_i proportional to the loss, each weighted 1 / (B p_i) (Katharopoulos & Fleuret
    2018, in brief)."""

    replaces_batch = True

    @dataclass
    class Params:
        factor: int = 3

    def setup(self, trainer, pl_module, stage):
        self.dm = self.datamodule(trainer)
        self.candidates: list[int] = []

    def on_batch(self, batch, module):
        b = len(batch["index"])
        big = self.dm.draw(self.params.factor * b)
        self.candidates.append(len(big["index"]))
        with scoring(module):
            score = F.cross_entropy(module(big["x"]).float(), big["y"], reduction="none") + 1e-6
        p = score / score.sum()
        pick = torch.multinomial(p, b, replacement=True)
        out = {k: v[pick] for k, v in big.items()}
        out["weight"] = 1.0 / (len(p) * p[pick])
        return out


@STRATEGIES.register("example_prune")
class ExamplePrune(Strategy):
    """Epoch subset: from `start_epoch` on, train each epoch on the samples whose last loss was not among the
    `fraction` smallest; the last epoch trains on all of them (InfoBatch's annealing, in brief)."""

    sets_subset = True
    state_attrs = ("last_loss",)

    @dataclass
    class Params:
        fraction: float = 0.5
        start_epoch: int = 1

    def __init__(self, params=None, position=0):
        super().__init__(params, position)
        self.last_loss = PerSampleBuffer(fill=float("inf"))  # unseen samples count as hard: kept

    def on_train_start(self, trainer, pl_module):
        self.last_loss.ensure(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last_loss.update(outputs["batch"]["index"], outputs["per_sample"])

    def on_train_epoch_end(self, trainer, pl_module):
        dm = self.datamodule(trainer)
        current = dm.train_subset
        self.log_metric(pl_module, "kept", float(dm.train_size if current is None else len(current)))
        self.last_loss.sync(trainer)
        following = trainer.current_epoch + 1
        if following < self.params.start_epoch or following >= trainer.max_epochs - 1:
            dm.set_train_subset(None)
            return
        n = len(self.last_loss)
        keep = torch.topk(self.last_loss.values, n - int(self.params.fraction * n)).indices
        dm.set_train_subset(keep)


@STRATEGIES.register("example_peer")
class ExamplePeer(Strategy):
    """Owned network: a peer like the module's network; each network trains on the `keep` share of the batch with
    the smallest loss under the other (Co-teaching, Han et al. 2018, in brief)."""

    state_attrs = ("peer",)

    @dataclass
    class Params:
        keep: float = 0.8

    def setup(self, trainer, pl_module, stage):
        self.peer = OwnedNetwork(pl_module)

    def weights(self, per_sample, logits, batch, weights, module):
        peer_loss = F.cross_entropy(self.peer(batch["x"]).float(), batch["y"], reduction="none")
        k = max(1, int(self.params.keep * len(per_sample)))
        for_main = torch.zeros_like(per_sample).scatter_(0, peer_loss.detach().topk(k, largest=False).indices, 1.0)
        for_peer = torch.zeros_like(per_sample).scatter_(0, per_sample.detach().topk(k, largest=False).indices, 1.0)
        self.peer.step((peer_loss * for_peer).sum() / k)
        return weights * for_main / for_main.mean()
