"""The shared pieces of the protocol: eval-mode scoring, exclusive roles and hook order, batch replacement by
drawing on both loader paths, per-term loss logging."""

from __future__ import annotations

import pytest
import torch

from robustlearn.config import load_config
from robustlearn.errors import ConfigError
from robustlearn.module import RobustClassifier
from robustlearn.runner import fit
from robustlearn.strategies.noisy.gce import GCE
from robustlearn.strategies.step import StepPlan
from tests.conftest import SMOKE
from tests.protocol_helpers import Recorder, rows, smoke
from tests.strategy_examples import ExampleClassWeight, ExamplePresample, ExamplePrune


def test_scoring_leaves_batchnorm_statistics_and_modes_alone(tmp_path):
    cfg = smoke(tmp_path, "model.batchnorm=true", "model.dropout=0.5")
    module = RobustClassifier(cfg, 4, (2,))
    module.train()
    bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d))
    frozen = next(m for m in module.modules() if isinstance(m, torch.nn.ReLU))
    frozen.eval()  # a submodule kept in eval mode on purpose stays so
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(32, 2) * 5 + 3
    with module.scoring():
        a, b = module(x), module(x)
        assert not module.training and not a.requires_grad
    assert torch.equal(a, b)  # dropout off
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert module.training and bn.training and not frozen.training
    module(x)  # a training-mode forward does move the statistics: the check above could fail
    assert not torch.equal(bn.running_mean, before["running_mean"])


@pytest.mark.parametrize(("pair", "role"), [
    ("[{name: example_presample}, {name: example_presample}]", "replace the training batch"),
    ("[{name: example_prune}, {name: example_prune}]", "choose the training subset"),
    ("[{name: gce}, {name: example_mae}]", "provide the training loss"),
])
def test_two_strategies_in_one_exclusive_role_is_a_config_error(pair, role):
    with pytest.raises(ConfigError, match=f"both {role}"):
        load_config(SMOKE, [f"strategies={pair}"])


def test_batch_replacement_runs_before_every_other_on_batch():
    weight, pre, prune = ExampleClassWeight(position=0), ExamplePresample(position=1), ExamplePrune(position=2)
    plan = StepPlan([weight, pre, prune])
    assert plan.on_batch == [pre, weight, prune] and plan.strategies == [weight, pre, prune]
    with pytest.raises(ConfigError, match="both provide the training loss"):
        StepPlan([GCE(position=0), GCE(position=1)])


@pytest.mark.parametrize("loader", ["device", "dataloader"])
def test_presampler_draws_three_b_candidates_per_step(tmp_path, loader):
    rec = Recorder()
    result = fit(smoke(tmp_path, "strategies=[{name: example_class_weight}, {name: example_presample, factor: 3}]",
                       "trainer.epochs=1", f"data.loader={loader}"), quiet=True, callbacks=[rec])
    assert result["status"] == "completed"
    (pre,) = [s for s in rec.strategies if s.name == "example_presample"]
    assert pre.candidates == [192] * 28 + [24]  # 3b per step; the last batch has b = 1800 - 28 * 64 = 8


def test_per_term_losses_are_logged(tmp_path):
    result = fit(smoke(tmp_path, "strategies=[{name: example_elr, lam: 3.0}]", "trainer.epochs=2"), quiet=True)
    for r in rows(result["run_dir"]):
        main, penalty, total = (float(r[k]) for k in ("train/loss_main", "example_elr/penalty", "train/loss"))
        assert penalty < 0  # ELR's log(1 - <t, p>) is negative: the total alone would hide the main loss
        assert total == pytest.approx(main + penalty, rel=1e-5)
