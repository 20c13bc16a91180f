"""`loss()` is told which network produced the logits: a loss that needs a second forward (a second augmented view,
as GJS) runs the network whose loss it is. Composed with Co-teaching, the module's network and the peer each run
exactly two forwards per training step (its logits, and its second view), none on the other's behalf."""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.registry import STRATEGIES
from robustlearn.runner import fit
from robustlearn.strategies.base import Strategy
from tests.protocol_helpers import smoke


@STRATEGIES.register("test_two_view")
class TwoView(Strategy):
    """CE on the batch plus CE on a second view (the inputs flipped in sign), the second view through `net`."""

    provides_loss = True

    @dataclass
    class Params:
        pass

    def loss(self, logits, batch, module, net=None):
        second = (net if net is not None else module)(-batch["x"])
        y = batch["y"]
        return F.cross_entropy(logits.float(), y, reduction="none") + F.cross_entropy(second.float(), y,
                                                                                       reduction="none")


class CountForwards(pl.Callback):
    """Forwards of the module's network and of Co-teaching's peer inside training steps."""

    def __init__(self):
        self.main, self.peer, self.steps, self.inside = 0, 0, 0, False

    def on_train_start(self, trainer, pl_module):
        peer = next(s for s in trainer.callbacks if getattr(s, "name", "") == "coteaching").peer.net
        pl_module.net.register_forward_hook(lambda *a: self._count("main"))
        peer.register_forward_hook(lambda *a: self._count("peer"))

    def _count(self, which):
        if self.inside:
            setattr(self, which, getattr(self, which) + 1)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.inside = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.inside = False
        self.steps += 1


def test_a_two_view_loss_with_coteaching_runs_each_network_twice_per_step(tmp_path):
    counter = CountForwards()
    cfg = smoke(tmp_path, "trainer.epochs=1", "output.save_checkpoint=false", "data.n_train=300",
                "strategies=[{name: test_two_view}, {name: coteaching, ramp_epochs: 1}]")
    result = fit(cfg, quiet=True, callbacks=[counter])
    assert result["status"] == "completed", result["error"]
    assert counter.steps > 0
    assert (counter.main, counter.peer) == (2 * counter.steps, 2 * counter.steps)


def test_a_loss_without_a_net_argument_still_works():
    class Plain(Strategy):
        provides_loss = True

        def loss(self, logits, batch, module):
            return F.cross_entropy(logits, batch["y"], reduction="none")

    from robustlearn.strategies.step import run_loss

    logits = torch.randn(4, 3)
    batch = {"y": torch.tensor([0, 1, 2, 0])}
    out = run_loss(None, logits, batch, net=lambda x: x, provider=Plain())
    torch.testing.assert_close(out, F.cross_entropy(logits, batch["y"], reduction="none"))


def test_a_mixed_batch_gets_the_mixed_loss_of_any_provider():
    # mixup's contract: x = lam x_a + (1 - lam) x_b with targets y (of a) and y_b (of b); the loss is
    # lam l(z, y) + (1 - lam) l(z, y_b) for whichever loss the run uses, hand-computed here for CE and GCE.
    from robustlearn.strategies.noisy.gce import GCE
    from robustlearn.strategies.step import run_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]], dtype=torch.float64)
    p = torch.softmax(logits, 1)
    batch = {"y": torch.tensor([0, 2]), "y_b": torch.tensor([1, 0]), "lam": torch.tensor([0.7, 0.25],
             dtype=torch.float64), "index": torch.tensor([3, 4])}
    lam = batch["lam"]
    ce = -(lam * p[[0, 1], [0, 2]].log() + (1 - lam) * p[[0, 1], [1, 0]].log())
    torch.testing.assert_close(run_loss(None, logits, batch, provider=_CE()).double(), ce)
    gce = GCE(GCE.Params(q=0.7))
    q = 0.7
    expected = lam * (1 - p[[0, 1], [0, 2]] ** q) / q + (1 - lam) * (1 - p[[0, 1], [1, 0]] ** q) / q
    torch.testing.assert_close(run_loss(None, logits, batch, provider=gce).double(), expected, rtol=1e-5, atol=1e-6)
    plain = {"y": batch["y"], "index": batch["index"]}  # no mixing: the provider's loss as it is
    torch.testing.assert_close(run_loss(None, logits, plain, provider=gce), gce.loss(logits, plain, None))


class _CE(Strategy):
    provides_loss = True

    def loss(self, logits, batch, module):
        return F.cross_entropy(logits, batch["y"], reduction="none")
