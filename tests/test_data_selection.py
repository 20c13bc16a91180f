"""Data selection (random pruning, InfoBatch, online batch selection, Selective Backprop, RHO-LOSS) against their
formulas on hand-computed cases, InfoBatch's unbiasedness in expectation, and parameter validation. The runs (resume,
composition with GCE, no host sync) are in tests/test_data_selection_runs.py."""

from __future__ import annotations

import collections
import math
from types import SimpleNamespace

import pytest
import torch
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
from robustlearn.strategies.sampling.rho_loss import RhoLoss, select_top
from robustlearn.strategies.sampling.selective_backprop import SelectiveBackprop, keep_probability
from tests.conftest import SMOKE
from tests.protocol_helpers import assert_bad_strategy_parameter
from tests.sync_guard import no_host_sync

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


def test_selective_backprop_keep_probability_is_the_official_share_strictly_below():
    # Official UnboundedHistogram.percentile_of_score: #{h in H : h < l} / |H| (strict), then ** beta.
    history = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    got = keep_probability(torch.tensor([3.0, 4.0, 1.0, 10.0], dtype=torch.float64), history, 3.0)
    expected = torch.tensor([0.125, 0.421875, 0.0, 1.0], dtype=torch.float64)  # (2/4)^3, (3/4)^3, (0/4)^3, (4/4)^3
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
    ties = torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64)
    got = keep_probability(torch.tensor([2.0, 2.5, 0.5], dtype=torch.float64), ties, 1.0)
    torch.testing.assert_close(got, torch.tensor([0.25, 0.75, 0.0], dtype=torch.float64), rtol=0, atol=1e-15)


def _official_keep_probabilities(batches, b, r, beta):
    """The official rule, transcribed (BatchedRelativeProbabilityCalculator.get_probability over forward batches of b,
    UnboundedHistogram(max_history=r)): each forward batch joins the deque, then each of its losses is scored."""
    history, out = collections.deque(maxlen=r), []
    for losses in batches:
        for start in range(0, len(losses), b):
            chunk = losses[start:start + b]
            history.extend(chunk)
            out.append([(sum(1 for h in history if h < v) / len(history)) ** beta for v in chunk])
    return out


def test_selective_backprop_history_order_and_cap_follow_the_official_code():
    sb = SelectiveBackprop(SelectiveBackprop.Params(beta=2.0, history=4, candidates=2.0))
    sb.b, sb.m = 2, 4
    sb.history = torch.zeros(4)
    steps = [[3.0, 1.0, 2.0, 5.0], [4.0, 0.5, 6.0, 2.0]]
    # By hand (beta 2, forward batches of b = 2, history capped at R = 4, oldest dropped first):
    # step 1, batch [3, 1]: H = [3, 1]           -> 3: 1/2, 1: 0/2      -> 1/4, 0
    #         batch [2, 5]: H = [3, 1, 2, 5]     -> 2: 1/4, 5: 3/4      -> 1/16, 9/16
    # step 2, batch [4, .5]: H = [2, 5, 4, .5]   -> 4: 2/4, .5: 0/4     -> 1/4, 0
    #         batch [6, 2]: H = [4, .5, 6, 2]    -> 6: 3/4, 2: 1/4      -> 9/16, 1/16
    expected = [[0.25, 0.0, 0.0625, 0.5625], [0.25, 0.0, 0.5625, 0.0625]]
    flat = [sum(_official_keep_probabilities([s], 2, 4, 2.0), []) for s in steps]
    assert flat[0] == expected[0]  # the transcription agrees with the hand values on step 1 ...
    assert sum(_official_keep_probabilities(steps, 2, 4, 2.0), []) == expected[0] + expected[1]  # ... and on both
    with no_host_sync():
        got = [sb.keep_probabilities(torch.tensor(s)) for s in steps]
    for p, want in zip(got, expected):
        torch.testing.assert_close(p.double(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-7)
    assert sb.filled == 4 and sorted(sb.history.tolist()) == [0.5, 2.0, 4.0, 6.0]
    # A longer random run against the transcription, with ties, a batch longer than R and a short last batch.
    g = torch.Generator().manual_seed(0)
    sb = SelectiveBackprop(SelectiveBackprop.Params(beta=3.0, history=7, candidates=2.5))
    sb.b, sb.m = 3, 8
    sb.history = torch.zeros(7)
    steps = [(torch.randint(0, 12, (n,), generator=g).float() / 4).tolist() for n in (8, 8, 8, 5, 8)]
    want = _official_keep_probabilities(steps, 3, 7, 3.0)
    got = torch.cat([sb.keep_probabilities(torch.tensor(s)) for s in steps])
    torch.testing.assert_close(got.double(), torch.tensor(sum(want, []), dtype=torch.float64), rtol=0, atol=1e-6)
    sb = SelectiveBackprop(SelectiveBackprop.Params(beta=1.0, history=2, candidates=3.0))
    sb.b, sb.m = 3, 9
    sb.history = torch.zeros(2)
    got = sb.keep_probabilities(torch.tensor([5.0, 1.0, 3.0]))  # a batch of 3 > R = 2: H keeps its last two, [1, 3]
    torch.testing.assert_close(got.double(), torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64), rtol=0, atol=0)

def test_selective_backprop_primes_with_epochs_of_full_backprop():
    """The official first epoch backpropagates every sample (PrimedSelector with BaselineSelector, which never calls the
    probability calculator): the loader's batch is b, the step trains it as it is, the history stays empty."""
    assert SelectiveBackprop.Params().prime_epochs == 1  # official: num_images_to_prime = the training-set size
    sb = SelectiveBackprop(SelectiveBackprop.Params(prime_epochs=2))
    sb.b, sb.m = 8, 40
    sizes = []
    sb.dm = SimpleNamespace(cfg=SimpleNamespace(seed=0), set_train_batch_size=sizes.append)
    trainer = SimpleNamespace(current_epoch=0, global_rank=0, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    module = _FakeModule()
    assert [sb.loader_batch_size(e) for e in range(4)] == [None, None, 40, 40]  # None: data.batch_size (b)
    for epoch, size in ((0, None), (1, 40)):
        trainer.current_epoch = epoch
        sb.on_train_epoch_start(trainer, module)
        idx = torch.arange(8)
        batch = {"x": torch.randn(8, 1), "y": idx % 2, "y_clean": idx % 2, "index": idx}
        with no_host_sync():
            assert sb.on_batch(batch, module) is batch
        assert sb.filled == 0 and sb.pool is None
        sb.on_train_epoch_end(trainer, module)
        assert sizes[-1] == size  # the next epoch's loader batch
    trainer.current_epoch = 2
    sb.on_train_epoch_start(trainer, module)
    idx = torch.arange(40)
    with no_host_sync():
        out = sb.on_batch({"x": torch.randn(40, 1), "y": idx % 2, "y_clean": idx % 2, "index": idx}, module)
    assert len(out["index"]) == 8 and sb.filled == 40
    assert SelectiveBackprop(SelectiveBackprop.Params(prime_epochs=0)).params.prime_epochs == 0


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


class _BatchNormModule(nn.Module):
    """A network that is one BatchNorm1d (no affine, float64, eps 1e-12: negligible here): its logits are the normalised
    inputs."""

    def __init__(self):
        super().__init__()
        self.epoch_means = EpochMeans()
        self.bn = nn.BatchNorm1d(2, eps=1e-12, affine=False, dtype=torch.float64)

    def forward(self, x):
        return self.bn(x)


class _Candidates:
    """`draw(n)`: always the same four candidates."""

    def __init__(self):
        # columns: [0, 0, 2, 2] (mean 1, biased variance 1) and [0, 20, 0, 20] (mean 10, biased variance 100)
        self.batch = {"x": torch.tensor([[0.0, 0.0], [0.0, 20.0], [2.0, 0.0], [2.0, 20.0]], dtype=torch.float64),
                      "y": torch.tensor([1, 0, 0, 1]), "y_clean": torch.tensor([1, 0, 0, 1]), "index": torch.arange(4)}

    def draw(self, n):
        assert n == 4
        return {k: v.clone() for k, v in self.batch.items()}


# Softplus(z_other − z_y), the two-class cross-entropy, of the hand-computed logits:
# train mode, batch statistics: logits [[-1, -1], [-1, 1], [1, -1], [1, 1]] -> differences 0, 2, -2, 0
TRAIN_LOSSES = [0.6931471805599453, 2.1269280110429727, 0.1269280110429725, 0.6931471805599453]
# eval mode, running statistics (mean 0, variance 1): logits = inputs -> differences 0, 20, -2, -18
EVAL_LOSSES = [0.6931471805599453, 20.000000002061153, 0.1269280110429725, 1.5229979628736488e-08]


def _rho(**params):
    rho = RhoLoss(RhoLoss.Params(presample=2, **params))
    rho.dm = _Candidates()
    rho.irreducible.values = torch.tensor([0.1, 0.0, 0.0, 0.0])
    return rho


def test_rho_loss_scores_in_train_mode_by_default_as_the_official_code():
    """Official: MultiModels.training_step sets large_model.train() (selection_train_mode=True) and
    reducible_loss_selection scores under torch.no_grad(), which does not stop BatchNorm from updating its running
    statistics: the scoring pass normalises with the candidates' batch statistics and moves the running mean and
    variance once (momentum 0.1, unbiased variance) before the training forward moves them again. The irreducible
    losses are precomputed in eval mode (a lookup, as the cache here)."""
    rho, module = _rho(), _BatchNormModule()
    with no_host_sync():
        out = rho.on_batch({"index": torch.arange(2)}, module)
    # scores = TRAIN_LOSSES − [0.1, 0, 0, 0] = [0.593, 2.127, 0.127, 0.693]: the top two are candidates 1 and 3
    # (eval-mode scores [0.593, 20.0, 0.127, 1.5e-8] would pick 1 and 0)
    assert sorted(out["index"].tolist()) == [1, 3]
    bn = module.bn
    torch.testing.assert_close(bn.running_mean, torch.tensor([0.1, 1.0], dtype=torch.float64), rtol=0, atol=1e-15)
    # 0.9 · 1 + 0.1 · (unbiased variances 4/3 and 400/3)
    torch.testing.assert_close(bn.running_var, torch.tensor([1.0333333333333334, 14.233333333333334],
                                                            dtype=torch.float64), rtol=1e-15, atol=1e-15)
    assert int(bn.num_batches_tracked) == 1 and bn.training and module.training
    assert RhoLoss.Params().score_mode == "train"


@pytest.mark.parametrize("mode, losses, updates", [("train", TRAIN_LOSSES, True), ("eval", EVAL_LOSSES, False)])
def test_rho_loss_score_modes_differ_as_intended(mode, losses, updates):
    rho, module = _rho(score_mode=mode), _BatchNormModule()
    big = rho.dm.draw(4)
    with no_host_sync():
        got = rho.candidate_losses(big["x"], big["y"], module)
    assert not got.requires_grad
    torch.testing.assert_close(got.double(), torch.tensor(losses, dtype=torch.float64), rtol=1e-6, atol=1e-7)
    assert all(m.training for m in module.modules())  # the modes are as they were
    assert (int(module.bn.num_batches_tracked) == 1) == updates
    assert torch.equal(module.bn.running_mean, torch.zeros(2, dtype=torch.float64)) != updates
    with no_host_sync():
        out = rho.on_batch({"index": torch.arange(2)}, module)
    assert sorted(out["index"].tolist()) == ([1, 3] if mode == "train" else [0, 1])


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
    ("{name: selective_backprop, prime_epochs: -1}", "prime_epochs"),
    ("{name: selective_backprop, prime_epochs: 0.5}", "prime_epochs"),
    ("{name: rho_loss, presample: 1}", "presample"),
    ("{name: rho_loss, il_epochs: 0}", "il_epochs"),
    ("{name: rho_loss, holdout: train}", "holdout"),
    ("{name: rho_loss, score_mode: batch}", "score_mode"),
])
def test_bad_parameters_are_refused(entry, key):
    assert_bad_strategy_parameter(entry, key)


def test_rho_loss_needs_a_validation_split():
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, ["strategies=[{name: rho_loss}]", "data.val_fraction=0"])
    assert err.value.key == "strategies[0].holdout"
