"""Data selection (random pruning, InfoBatch, online batch selection, Selective Backprop, RHO-LOSS) against their
formulas on hand-computed cases, InfoBatch's unbiasedness in expectation, and parameter validation. The runs (resume,
composition with GCE, no host sync) are in tests/test_data_selection_runs.py."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import percentileofscore
from torch import nn

import robustlearn.strategies.sampling.infobatch  # noqa: F401
import robustlearn.strategies.sampling.online_batch_selection  # noqa: F401
import robustlearn.strategies.sampling.random_pruning  # noqa: F401
import robustlearn.strategies.sampling.rho_loss  # noqa: F401
import robustlearn.strategies.sampling.selective_backprop  # noqa: F401
from robustlearn.config import load_config
from robustlearn.epoch_means import EpochMeans
from robustlearn.errors import ConfigError
from robustlearn.strategies.sampling.infobatch import InfoBatch, infobatch_prune
from robustlearn.strategies.sampling.online_batch_selection import (
    OnlineBatchSelection,
    pressure_at,
    rank_probabilities,
)
from robustlearn.strategies.sampling.random_pruning import random_subset
from robustlearn.strategies.sampling.rho_loss import select_top
from robustlearn.strategies.sampling.selective_backprop import SelectiveBackprop, keep_probability
from tests.conftest import SMOKE
from tests.protocol_helpers import assert_bad_strategy_parameter

# ---- random pruning ---------------------------------------------------------------------------------------------


def test_random_subset_sizes_and_seeding():
    for ratio, size in ((0.5, 900), (0.3, 1260), (0.9, 180)):
        subset = random_subset(1800, ratio, seed=0, epoch=1)
        assert len(subset) == size and len(torch.unique(subset)) == size
        assert torch.equal(subset, subset.sort().values) and int(subset[0]) >= 0 and int(subset[-1]) < 1800
    assert random_subset(1800, 0.0, 0, 1) is None
    assert torch.equal(random_subset(1800, 0.5, 0, 3), random_subset(1800, 0.5, 0, 3))  # (seed, epoch) fixes it
    assert not torch.equal(random_subset(1800, 0.5, 0, 3), random_subset(1800, 0.5, 0, 4))  # a new one each epoch
    assert not torch.equal(random_subset(1800, 0.5, 0, 3), random_subset(1800, 0.5, 1, 3))


# ---- InfoBatch --------------------------------------------------------------------------------------------------


def test_infobatch_prunes_below_mean_and_rescales_by_one_over_one_minus_r():
    # mean of the scored samples = (0.1 + 0.2 + 0.3 + 0.4 + 2.0 + 3.0) / 6 = 1.0; samples 0-3 lie below it.
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 2.0, 3.0, float("nan")])
    keep, weights, threshold = infobatch_prune(scores, 0.5, torch.Generator().manual_seed(0))
    assert threshold == pytest.approx(1.0)
    kept_low = [i for i in keep.tolist() if i < 4]
    assert len(kept_low) == 2  # int((1 - 0.5) * 4)
    assert {4, 5, 6} <= set(keep.tolist()) and len(keep) == 5  # high-loss and never-scored samples are all kept
    expected = torch.ones(7)
    expected[kept_low] = 2.0  # 1 / (1 - 0.5)
    torch.testing.assert_close(weights, expected)
    # r = 0.3 on 5 low samples: int(0.7 * 5) = 3 kept, each weighted 1 / 0.7
    scores = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 10.0])  # mean 11 / 6
    keep, weights, _ = infobatch_prune(scores, 0.3, torch.Generator().manual_seed(1))
    assert len(keep) == 4 and 5 in keep.tolist()
    assert sorted(weights.tolist()) == pytest.approx([1.0] * 3 + [1 / 0.7] * 3)


def test_infobatch_pruned_epochs_follow_the_official_sampler():
    strategy = InfoBatch(InfoBatch.Params(ratio=0.5, delta=0.875))
    assert [e for e in range(8) if strategy.pruned(e, 8)] == [1, 2, 3, 4, 5, 6]  # e + 1 <= 7
    pruned = [e for e in range(200) if strategy.pruned(e, 200)]
    assert pruned[0] == 1 and pruned[-1] == 174 and len(pruned) == 174  # 25 full epochs at the end


def test_infobatch_epoch_gradient_is_unbiased_in_expectation():
    """Σ_{kept} w_i g_i over many random prunings has the mean Σ_i g_i; without the 1 / (1 − r) it does not."""
    g = torch.Generator().manual_seed(0)
    n_low, n_high = 120, 80  # 120 samples below the mean: int(0.5 * 120) = 60 kept exactly half of them
    scores = torch.cat([torch.rand(n_low, generator=g), 5.0 + torch.rand(n_high, generator=g)])
    grads = torch.randn(n_low + n_high, 3, generator=g, dtype=torch.float64)
    grads[:n_low] += 2.0  # the low-loss samples' gradients have a common direction: dropping them biases the sum
    full = grads.sum(0)
    sums, unscaled = [], []
    for t in range(3000):
        keep, weights, _ = infobatch_prune(scores, 0.5, torch.Generator().manual_seed(100 + t))
        sums.append((weights[keep, None].double() * grads[keep]).sum(0))
        unscaled.append(grads[keep].sum(0))
    sums, unscaled = torch.stack(sums), torch.stack(unscaled)
    se = sums.std(0) / math.sqrt(len(sums))
    assert ((sums.mean(0) - full).abs() < 4 * se).all(), (sums.mean(0), full, se)
    assert ((unscaled.mean(0) - full).abs() > 20 * se).all()  # the test can fail: unscaled pruning is biased


# ---- online batch selection -------------------------------------------------------------------------------------


def test_rank_probabilities_follow_the_formula():
    p = rank_probabilities(5, 100.0)
    expected = torch.tensor([100.0 ** (-i / 5) for i in range(1, 6)], dtype=torch.float64)
    torch.testing.assert_close(p, expected / expected.sum())
    assert float(p[0] / p[-1]) == pytest.approx(100.0 ** (4 / 5))  # s^((N - 1)/N) ≈ s for large N
    big = rank_probabilities(10_000, 1e8)
    assert float(big[0] / big[-1]) == pytest.approx(1e8 ** (9999 / 10_000), rel=1e-9)
    torch.testing.assert_close(rank_probabilities(4, 1.0), torch.full((4,), 0.25, dtype=torch.float64))
    assert [round(pressure_at(e, 5, 100.0, 1.0), 4) for e in range(5)] == [100.0, 31.6228, 10.0, 3.1623, 1.0]
    assert pressure_at(0, 1, 100.0, 1.0) == 100.0


class _FakeData:
    """The datamodule calls a batch replacement makes: the whole split, and no augmentation."""

    def __init__(self, n):
        self.n = n

    def train_tensors(self):
        idx = torch.arange(self.n)
        return {"x": idx.float()[:, None], "y": idx % 2, "y_clean": idx % 2, "index": idx}

    def augment(self, x, generator):
        return x


class _FakeModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.epoch_means = EpochMeans()
        self.lin = nn.Linear(1, 2)
        self._trainer = None

    def forward(self, x):
        return self.lin(x)


def test_online_batch_selection_draws_samples_by_the_rank_of_their_loss():
    n, s = 6, 10.0
    obs = OnlineBatchSelection(OnlineBatchSelection.Params(s_start=s, s_end=s))
    obs.dm = _FakeData(n)
    obs.latest.values = torch.tensor([0.5, 3.0, 0.1, 2.0, 1.0, 0.2])  # ranks: 1, 3, 4, 0, 5, 2 (0 = largest)
    obs.probabilities = rank_probabilities(n, s, torch.float32)
    obs.generator = torch.Generator().manual_seed(0)
    draws = torch.cat([obs.on_batch({"index": torch.zeros(500, dtype=torch.long)}, _FakeModule())["index"]
                       for _ in range(40)])
    freq = torch.bincount(draws, minlength=n).double() / len(draws)
    rank_of = torch.tensor([3, 0, 5, 1, 2, 4])
    expected = rank_probabilities(n, s)[rank_of]
    assert (freq - expected).abs().max() < 4 * math.sqrt(0.25 / len(draws))
    assert int(freq.argmax()) == 1 and int(freq.argmin()) == 2  # the largest loss most often, the smallest least


# ---- Selective Backprop -----------------------------------------------------------------------------------------


def test_selective_backprop_keep_probability_formula():
    history = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # loss 3 in [1, 2, 3, 4]: 2 below, 3 at or below -> (2 + 3 + 1) / 8 = 0.75 = rank 3 of 4; 0.75^3
    torch.testing.assert_close(keep_probability(torch.tensor([3.0]), history, 3.0), torch.tensor([0.421875]))
    torch.testing.assert_close(keep_probability(torch.tensor([4.0, 1.0]), history, 1.0), torch.tensor([1.0, 0.25]))
    g = torch.Generator().manual_seed(0)
    history = torch.randint(0, 20, (300,), generator=g).float() / 4  # ties, as scipy's "rank" kind averages them
    losses = history[:50]
    ours = keep_probability(losses, history, 3.0)
    reference = torch.tensor([(percentileofscore(history.numpy(), v, kind="rank") / 100) ** 3 for v in losses.tolist()])
    torch.testing.assert_close(ours, reference.float())


def test_selective_backprop_trains_full_batches_of_kept_samples():
    sb = SelectiveBackprop(SelectiveBackprop.Params(beta=3.0, history=64, candidates=5.0))
    sb.b, sb.m = 8, 40
    sb.history, sb.generator = torch.zeros(64), torch.Generator().manual_seed(0)
    module = _FakeModule()
    seen = []
    for step in range(30):
        idx = torch.arange(step * 40, step * 40 + 40)
        out = sb.on_batch({"x": torch.randn(40, 1), "y": idx % 2, "y_clean": idx % 2, "index": idx}, module)
        assert len(out["index"]) == 8
        seen.append(out)
    # After the first steps the pool is full: every step trains b kept samples, each once, with weight 1.
    late = torch.cat([o["index"] for o in seen[5:]])
    assert len(torch.unique(late)) == len(late)
    assert all(bool((o["weight"] == 1).all()) for o in seen[5:])
    assert sb.filled == 64 and int(sb.pool_count) <= sb.b + sb.m


# ---- RHO-LOSS ---------------------------------------------------------------------------------------------------


def test_rho_loss_selects_by_reducible_loss():
    loss = torch.tensor([2.0, 1.0, 3.0, 0.5, 0.2])
    irreducible = torch.tensor([1.9, 0.1, 2.9, 0.0, 0.1])  # scores 0.1, 0.9, 0.1, 0.5, 0.1
    assert sorted(select_top(loss - irreducible, 2).tolist()) == [1, 3]
    assert sorted(select_top(loss, 2).tolist()) == [0, 2]  # by the plain loss: the two high-irreducible ones


# ---- parameters -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry,key", [
    ("{name: random_pruning, ratio: 1.0}", "ratio"),
    ("{name: random_pruning, ratio: -0.1}", "ratio"),
    ("{name: infobatch, ratio: 0.95}", "ratio"),
    ("{name: infobatch, ratio: 0}", "ratio"),
    ("{name: infobatch, delta: 1.5}", "delta"),
    ("{name: infobatch}", "delta"),  # delta * epochs = 0.875 * 2 < 2: no epoch would be pruned
    ("{name: online_batch_selection, s_start: 0.5}", "s_start"),
    ("{name: online_batch_selection, s_end: .nan}", "s_end"),
    ("{name: online_batch_selection, recompute: 1.5}", "recompute"),
    ("{name: selective_backprop, beta: 0}", "beta"),
    ("{name: selective_backprop, history: 0}", "history"),
    ("{name: selective_backprop, candidates: 0.5}", "candidates"),
    ("{name: rho_loss, presample: 1}", "presample"),
    ("{name: rho_loss, il_epochs: 0}", "il_epochs"),
    ("{name: rho_loss, holdout: train}", "holdout"),
])
def test_bad_parameters_are_refused(entry, key):
    assert_bad_strategy_parameter(entry, key)


def test_rho_loss_needs_a_validation_split():
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, ["strategies=[{name: rho_loss}]", "data.val_fraction=0"])
    assert err.value.key == "strategies[0].holdout"
