"""CAL (Zhu, Liu & Liu 2021): the alpha plan against the official SegAlpha, the sieve and T̂ by hand, the covariance
term and its gradient against a transcription of the official tensor code, and runs: two stages logged, a sieve
closer to the clean labels than the noisy ones, and an exact resume across the restart."""

from __future__ import annotations

import math
from bisect import bisect_right

import pytest
import torch

from robustlearn.runner import fit
from robustlearn.strategies.noisy.cal import covariance_term, seg_alpha, sieve_estimates, sieve_labels
from tests.protocol_helpers import Recorder, assert_bad_strategy_parameter, assert_resumes_exactly, rows, smoke


def official_seg_alpha(epochs: int, alpha_list, milestones) -> list[float]:
    """The official SegAlpha: alpha after each epoch's scheduler step, from a base alpha of 0."""
    slopes, cur, at = [], 0.0, 0
    for a, m in zip(alpha_list, milestones):
        slopes.append((a - cur) / float(m - at))
        cur, at = a, m
    out, alpha = [0.0], 0.0
    for step in range(1, epochs):
        idx = bisect_right(milestones, step - 1)
        if idx < len(alpha_list):
            alpha += slopes[idx]
        out.append(alpha)
    return out


def test_alpha_plan_is_the_official_one_at_100_epochs():
    for top in (2.0, 1.0):
        official = official_seg_alpha(100, [0.0, top, top], [10, 40, 80])
        assert [seg_alpha(e, 100, top) for e in range(100)] == pytest.approx(official, abs=1e-12)


def test_sieve_by_hand():
    """p = (1 - 1e-5, 5e-6, 5e-6): label 0 costs ~1e-5, the mean label ~8.14, so 0 is kept; label 1 costs ~12.2 and
    is replaced by the prediction 0; with p = (0.9, 0.05, 0.05) label 0 is only 1.96 below the mean: the prediction."""
    probs = torch.tensor([[1 - 1e-5, 5e-6, 5e-6], [1 - 1e-5, 5e-6, 5e-6], [0.05, 0.9, 0.05]], dtype=torch.float64)
    nll = -torch.log(probs + 1e-8)
    assert (nll[0, 0] - nll[0].mean()).item() < -8 < (nll[1, 1] - nll[1].mean()).item()
    assert sieve_labels(probs.log(), torch.tensor([0, 1, 1]), 8.0).tolist() == [0, 0, 1]
    assert sieve_labels(probs.log(), torch.tensor([2, 1, 1]), 1.0).tolist() == [0, 0, 1]  # 1.96 > 1: kept


def test_transition_and_prior_from_the_sieve_by_hand():
    """ŷ = (0, 0, 0, 1, 1, -1), ỹ = (0, 0, 1, 1, 0, 2): row 0 is (2/3, 1/3), row 1 (1/2, 1/2); the unsieved sample is
    left out; P(ŷ) = (3/5, 2/5, 0)."""
    t, prior = sieve_estimates(torch.tensor([0, 0, 0, 1, 1, -1]), torch.tensor([0, 0, 1, 1, 0, 2]), 3)
    assert torch.allclose(t, torch.tensor([[2 / 3, 1 / 3, 0], [0.5, 0.5, 0], [0, 0, 0]]))
    assert prior.tolist() == pytest.approx([0.6, 0.4, 0.0])


def official_cal_term(logits, t_mat, raw_idx, loss_mean_all, p_y):
    """The official CrossEntropyStableCALMultiple.forward (loss_out), transcribed; T_mat (K, K, N) as built in
    exptPeerReg.load_data."""
    log_out = -torch.log(torch.softmax(logits, dim=-1) + 1e-5)
    k = t_mat.shape[0]
    t = t_mat[:, :, raw_idx]
    indicator = torch.sum(t > 0.0, 1).view(k, 1, -1).repeat(1, k, 1).to(logits.dtype)
    loss_all = torch.transpose(log_out, 0, 1).view(1, k, -1).repeat(k, 1, 1)
    norm = (loss_all - loss_mean_all.view(k, k, 1).repeat(1, 1, t.shape[2])) * indicator
    total = torch.sum(indicator, dim=2)
    total[total == 0] = 1.0
    return torch.sum(torch.sum(torch.sum(t * norm, dim=2) / total, dim=1) * p_y)


def official_t_mat(distilled, noisy, k):
    """exptPeerReg: T_mat[i, j, n] = 1[ŷ = i, ỹ = j], then centred by the row's rate and masked to ŷ = i."""
    weight = torch.ones(len(noisy), dtype=torch.float64)
    t = torch.zeros(k, k, len(noisy), dtype=torch.float64)
    for i in range(k):
        for j in range(k):
            t[i, j] = ((distilled == i) & (noisy == j)).double() * weight
    for i in range(k):
        for j in range(k):
            weight_sum = max(float(torch.sum(weight * (distilled == i))), 1.0)
            t[i, j] = (t[i, j] - torch.sum(t[i, j]) / weight_sum) * weight * (distilled == i)
    return t


def test_covariance_term_and_gradient_match_the_official_code():
    g = torch.Generator().manual_seed(0)
    n, k, batch = 40, 4, 12
    noisy = torch.randint(0, k, (n,), generator=g)
    distilled = torch.where(torch.rand(n, generator=g) < 0.7, noisy, torch.randint(0, k, (n,), generator=g))
    distilled[distilled == 3] = 2  # class 3 never sieved: an empty row
    noisy[distilled == 1] = 1  # row 1 holds one label only: T̂[1, 1] = 1, those samples are not counted
    t_hat, p_y = sieve_estimates(distilled, noisy, k, dtype=torch.float64)
    loss_mean = torch.rand(k, k, generator=g, dtype=torch.float64)
    raw_idx = torch.randperm(n, generator=g)[:batch]
    logits = torch.randn(batch, k, generator=g, dtype=torch.float64, requires_grad=True)
    ours, counted, _ = covariance_term(-torch.log(torch.softmax(logits, 1) + 1e-5), noisy[raw_idx],
                                       distilled[raw_idx], t_hat, p_y, loss_mean)
    theirs = official_cal_term(logits, official_t_mat(distilled, noisy, k), raw_idx, loss_mean, p_y)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12, abs=1e-14)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-10, atol=1e-14)
    assert counted[distilled[raw_idx] == 1].sum() == 0 and counted.sum() > 0
    assert not math.isclose(theirs.item(), 0.0, abs_tol=1e-6)


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: cal, stage1_share: 1.0}", "stage1_share")
    assert_bad_strategy_parameter("{name: cal, alpha_cal: -1}", "alpha_cal")
    assert_bad_strategy_parameter("{name: cal, stage1_epochs: 2}", "stage1_epochs")  # smoke: 2 epochs, none for CAL


NOISY = ["noise.rate=0.4", "trainer.epochs=5", "output.save_checkpoint=false"]


def test_two_stages_and_a_sieve_closer_to_the_clean_labels(tmp_path):
    """Sieve in epochs 0-1, CAL on a restarted network in 2-4: the stages are logged, the best epoch is a CAL one,
    the sieve's labels agree with the clean labels more often than the noisy labels do, and C is logged."""
    rec = Recorder()
    result = fit(smoke(tmp_path, *NOISY, "strategies=[{name: cal, threshold: 2.0}]"), quiet=True, callbacks=[rec])
    assert result["status"] == "completed", result["error"]
    metrics = rows(result["run_dir"])
    assert [float(r["cal/stage"]) for r in metrics] == [1.0, 1.0, 2.0, 2.0, 2.0]
    assert result["best_epoch"] >= 2
    assert all(r["cal/covariance"] != "" for r in metrics[2:])
    (s,) = rec.strategies
    tensors = rec.module.trainer.datamodule.train_tensors()
    sieved, y, clean = s.sieved.values.cpu(), tensors["y"].cpu(), tensors["y_clean"].cpu()
    assert (sieved >= 0).all()
    assert (sieved == clean).float().mean() > (y == clean).float().mean() + 0.1
    assert s.kept_mask().float().mean() > 0.3  # threshold 2: most correctly labelled samples keep their label


def test_resumes_exactly_across_the_restart(tmp_path):
    assert_resumes_exactly(tmp_path, ["noise.rate=0.4", "trainer.epochs=4", "strategies=[{name: cal}]"],
                           stop_epoch=3)

