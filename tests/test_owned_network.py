"""OwnedNetwork: a peer built like the module's network, following its learning rate and train/eval mode, and
checkpointed with its strategy: a resumed run ends with the peer weights and optimiser state of an uninterrupted one."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from robustlearn.runner import fit
from tests.protocol_helpers import Recorder, assert_resumes_exactly, smoke

PEER = "strategies=[{name: example_peer, keep: 0.7}]"


def _peer_state(run_dir):
    ckpt = torch.load(f"{run_dir}/checkpoints/last.ckpt", weights_only=False)
    return ckpt["callbacks"]["example_peer[0]"]["peer"]


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_peer_resumes_with_identical_weights_and_optimizer(tmp_path, scheduler):
    straight, resumed = assert_resumes_exactly(tmp_path, [PEER, "trainer.epochs=4", f"scheduler.name={scheduler}"])
    a, b = _peer_state(straight["run_dir"]), _peer_state(resumed["run_dir"])
    assert a["optimizer"]["state"]  # momentum buffers exist, so the comparison covers them
    _assert_same(a, b)


class _LrCheck(pl.Callback):
    """The peer's learning rate and momentum at its step equal the main optimiser's at the main step."""

    def __init__(self):
        self.pairs = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        peer = next(cb for cb in trainer.callbacks if hasattr(cb, "peer")).peer
        main, own = optimizer.param_groups[0], peer.optimizer.param_groups[0]
        self.pairs.append(((main["lr"], main["momentum"]), (own["lr"], own["momentum"])))


def test_peer_follows_the_main_schedule_and_mode(tmp_path):
    check, rec = _LrCheck(), Recorder()
    fit(smoke(tmp_path, PEER, "trainer.epochs=2", "scheduler.name=onecycle"), quiet=True, callbacks=[check, rec])
    assert len(check.pairs) == 58 and all(m == p for m, p in check.pairs)
    assert len({m for m, _ in check.pairs}) > 50  # the schedule moved every step, and the peer with it
    (strategy,) = rec.strategies
    peer, module = strategy.peer, rec.module
    first = [p.detach().clone() for p in peer.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(first, module.net.parameters()))  # its own initial weights
    module.eval()
    peer(torch.randn(4, 2))
    assert not peer.net.training
    module.train()
    peer(torch.randn(4, 2))
    assert peer.net.training
