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
