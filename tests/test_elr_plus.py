"""ELR+ (Liu et al. 2020) and the shared `EMANetwork`: the ramp and the average by hand, the ELR term of mixed
targets, a run that evaluates the mean of both networks, and exact resume of two networks, two averages and the
targets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustlearn.runner import fit
from robustlearn.strategies.noisy.elr_plus import ELRPlus, elr_term, mixed_ce
from robustlearn.strategies.ramps import sigmoid_rampup
from tests.protocol_helpers import Recorder, assert_bad_strategy_parameter, assert_resumes_exactly, smoke


def test_ramp_and_the_average_by_hand():
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(10, 10) == 1.0
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-5 * 0.25))

    class _Module:
        def build_network(self):
            return nn.Linear(2, 1, bias=False)

        class trainer:  # noqa: N801
            class strategy:  # noqa: N801
                root_device = torch.device("cpu")

    from robustlearn.strategies.ema import EMANetwork

    source = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        source.weight.fill_(1.0)
    ema = EMANetwork(_Module(), source, alpha=0.9, ramp=0)
    with torch.no_grad():
        source.weight.fill_(3.0)
    ema.update(source, step=0)  # 0.9 * 1 + 0.1 * 3
    assert ema.net.weight[0].tolist() == pytest.approx([1.2, 1.2])


def test_elr_term_and_mixed_ce_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64))
    q = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    expected = (math.log(1 - 0.5) + math.log(1 - (0.5 * 0.9 + 0.5 * 0.1))) / 2
    assert elr_term(logits, q).item() == pytest.approx(expected, rel=1e-6)  # float32, as the step
    y, perm = torch.tensor([0, 1]), torch.tensor([1, 0])
    value = mixed_ce(logits, y, 0.7, perm).item()
    by_hand = 0.7 * (-math.log(0.5) - math.log(0.1)) / 2 + 0.3 * (-math.log(0.5) - math.log(0.9)) / 2
    assert value == pytest.approx(by_hand, rel=1e-6)


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: elr_plus, beta: 1.0}", "beta")
    assert_bad_strategy_parameter("{name: elr_plus, ema_alpha: -0.1}", "ema_alpha")


def test_a_run_trains_both_networks_and_scores_their_mean(tmp_path):
    rec = Recorder()
    result = fit(smoke(tmp_path, "strategies=[{name: elr_plus}]", "noise.rate=0.4", "trainer.epochs=3",
                       "output.save_checkpoint=false"), quiet=True, callbacks=[rec])
    assert result["status"] == "completed", result["error"]
    (s,) = rec.strategies
    assert s.peer_steps == rec.module.trainer.global_step == 3 * 29  # one peer step per training step
    # targets start at 0: a sample averaged in k times holds mass 1 - beta^k (k = 3 for all but the dropped ones)
    mass = s.t_main.values.sum(1)
    assert torch.isclose(mass, torch.tensor(1 - 0.7 ** 3), atol=1e-5).float().mean() > 0.9
    x = rec.module.trainer.datamodule.train_tensors()["x"][:8]
    with torch.no_grad():
        rec.module.eval()
        mean = 0.5 * (rec.module.net(x) + s.peer.net(x))
        assert torch.allclose(rec.module.eval_logits(x), mean[:, : rec.module.num_classes], atol=1e-6)
    assert result["test_acc_last"] > 0.8
    assert isinstance(s, ELRPlus)


def test_resumes_exactly(tmp_path):
    assert_resumes_exactly(tmp_path, ["strategies=[{name: elr_plus}]", "trainer.epochs=3"])


def test_memorises_far_fewer_flipped_labels_than_cross_entropy(tmp_path):
    """The memorisation data of tests/test_gjs_peer_loss.py (CE memorises 0.93 of the flipped labels there): ELR+
    memorises few (measured 0.07) and tests far better (0.996 against 0.68)."""
    from tests.test_gjs_peer_loss import _memorized

    (*_, ce), ce_acc = _memorized(tmp_path / "ce", "ce")  # the memorised share per epoch: its last
    (*_, memorized), acc = _memorized(tmp_path / "elr_plus", "elr_plus")
    assert memorized < ce / 4 and acc > ce_acc + 0.1
