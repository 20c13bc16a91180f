"""CORES² (Cheng et al. 2021): the schedules against the official f_beta, the loss and the sieve by hand, and one run,
interrupted and resumed exactly, whose kept set is cleaner than the data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustlearn.strategies.noisy.cores2 import CORES2, beta_schedule
from tests.protocol_helpers import (
    Recorder,
    assert_bad_strategy_parameter,
    assert_kept_set_cleaner,
    assert_resumes_exactly,
)


def test_schedule_is_the_official_one_at_100_epochs():
    official = np.concatenate([np.linspace(0.0, 0.0, 10), np.linspace(0.0, 2, 30), np.linspace(2, 2, 60)])
    betas, sieve_from = CORES2().plan(100)
    assert betas == pytest.approx(official.tolist(), abs=1e-12) and sieve_from == 30
    short, sieve_short = CORES2().plan(10)  # 1 warm-up epoch, a 3-epoch ramp, the sieve after epoch 3
    assert short == pytest.approx([0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]) and sieve_short == 3
    assert beta_schedule(4, 0, 1, 2.0) == [0.0, 2.0, 2.0, 2.0]  # linspace(0, 2, 1) = [0]


def test_loss_and_sieve_by_hand():
    """K = 2, p = (0.8, 0.2), prior (0.5, 0.5), beta 2: l = -log p_y - 2 * mean_k(-log(p_k + 1e-8)); the sieve keeps
    the sample labelled 0 (-log 0.8 below the mean) and drops the one labelled 1."""
    s = CORES2()
    s.prior, s.betas, s.sieve_from = torch.tensor([0.5, 0.5]), [2.0, 2.0], 0
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.8, 0.2]], dtype=torch.float64))
    y = torch.tensor([0, 1])

    class _Trainer:
        current_epoch = 1

    class _Module:
        trainer = _Trainer()

    mean = (-math.log(0.8 + 1e-8) - math.log(0.2 + 1e-8)) / 2
    out = s.loss(logits, {"y": y}, _Module())
    assert out.tolist() == pytest.approx([-math.log(0.8) - 2 * mean, -math.log(0.2) - 2 * mean], rel=1e-5)
    assert s.sieve(logits, y, epoch=1).tolist() == [1.0, 0.0]
    assert s.sieve(logits, y, epoch=0).tolist() == [1.0, 1.0]  # up to sieve_after, everything is kept


def test_bad_parameters_are_refused():
    assert_bad_strategy_parameter("{name: cores2, beta_max: -1}", "beta_max")
    assert_bad_strategy_parameter("{name: cores2, sieve_after: 1.5}", "sieve_after")


def test_resumes_exactly_and_keeps_a_cleaner_set_than_the_data(tmp_path):
    """40 % symmetric noise, 4 epochs (the sieve from epoch 2), interrupted when epoch 3 starts: the resumed run ends as
    the uninterrupted one, and the samples its last epoch kept hold far fewer flipped labels than the data."""
    rec = Recorder()
    assert_resumes_exactly(tmp_path, ["strategies=[{name: cores2}]", "noise.rate=0.4", "trainer.epochs=4"],
                           stop_epoch=3, callbacks=[rec])
    assert_kept_set_cleaner(rec)
