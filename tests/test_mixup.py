"""mixup (Zhang et al. 2018): the mixed batch and its loss by hand, the draw of lam and pi, the training metrics on
mixed inputs, and one run composed with GCE and presampling."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from robustlearn.runner import fit
from robustlearn.strategies.noisy.mixup import Mixup, mix
from robustlearn.strategies.step import run_loss
from tests.protocol_helpers import assert_bad_strategy_parameter, rows, smoke


def _batch():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    return {"x": x, "y": torch.tensor([0, 1, 2]), "y_clean": torch.tensor([0, 2, 2]), "index": torch.tensor([7, 8, 9])}


def test_a_mixed_batch_and_its_cross_entropy_by_hand():
    lam, perm = 0.3, torch.tensor([2, 0, 1])
    out = mix(_batch(), lam, perm)
    torch.testing.assert_close(out["x"], torch.tensor([[0.3 + 2.1, 2.1], [0.7, 0.6], [0.9, 0.9 + 1.4]]))
    assert out["y_b"].tolist() == [2, 0, 1] and out["index_b"].tolist() == [9, 7, 8]
    assert out["y_clean_b"].tolist() == [2, 0, 2]
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.5]])
    logp = torch.log_softmax(logits, 1)
    expected = -(0.3 * logp[[0, 1, 2], [0, 1, 2]] + 0.7 * logp[[0, 1, 2], [2, 0, 1]])
    torch.testing.assert_close(run_loss(None, logits, out, provider=None), expected)
    assert torch.equal(F.cross_entropy(logits, out["y"], reduction="none"), -logp[[0, 1, 2], [0, 1, 2]])


def test_lam_is_beta_and_the_draw_depends_on_the_step_only():
    m = Mixup(Mixup.Params(alpha=1.0))
    lams = torch.tensor([m.draw(8, step)[0] for step in range(2000)])
    # Beta(1, 1) is uniform on [0, 1]: mean 1/2, variance 1/12 (4-sigma bands for 2000 draws)
    assert abs(lams.mean().item() - 0.5) < 4 * (1 / 12 / 2000) ** 0.5
    assert abs(lams.var().item() - 1 / 12) < 0.01
    assert m.draw(8, 5)[0] == m.draw(8, 5)[0] and torch.equal(m.draw(8, 5)[1], m.draw(8, 5)[1])
    assert sorted(m.draw(8, 5)[1].tolist()) == list(range(8))
    sharp = torch.tensor([Mixup(Mixup.Params(alpha=0.2)).draw(4, s)[0] for s in range(2000)])
    assert ((sharp < 0.1) | (sharp > 0.9)).float().mean() > 0.5  # Beta(0.2, 0.2) piles up near 0 and 1
    lam, _ = Mixup(Mixup.Params(alpha=0.0)).draw(4, 3)
    assert lam == 1.0


def test_bad_alpha_is_refused():
    assert_bad_strategy_parameter("{name: mixup, alpha: -1}", "alpha")


class _Seen(pl.Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if len(self.batches) < 3:
            self.batches.append({k: v for k, v in outputs["batch"].items()})


def test_mixup_composes_with_gce_and_presampling_in_one_run(tmp_path):
    seen = _Seen()
    cfg = smoke(tmp_path, "strategies=[{name: presample, presample: 3.0, switch: step, tau_th: 0.0}, "
                          "{name: mixup}, {name: gce, q: 0.7}]", "trainer.epochs=2")
    result = fit(cfg, quiet=True, callbacks=[seen])
    assert result["status"] == "completed", result["error"]
    first = seen.batches[0]
    assert {"lam", "y_b", "index_b", "weight"} <= set(first)  # presampled (importance weights), then mixed
    assert 0.0 <= float(first["lam"]) <= 1.0
    last = rows(result["run_dir"])[-1]
    assert float(last["train/mixed"]) == 1.0 and 0.0 < float(last["train/acc"]) <= 1.0


def test_training_accuracy_on_a_mixed_batch_is_lam_weighted():
    """The module's train/acc on a mixed batch: lam [pred = y] + (1 - lam) [pred = y_b] (official mixup-cifar10)."""
    from robustlearn.epoch_means import EpochMeans
    from robustlearn.module import RobustClassifier

    module = RobustClassifier.__new__(RobustClassifier)
    torch.nn.Module.__init__(module)
    module.num_classes, module.epoch_means, module._trainer = 3, EpochMeans(), None
    logged = {}
    module.log = lambda key, value, **kw: logged.__setitem__(key, float(value))
    out = mix(_batch(), 0.3, torch.tensor([2, 0, 1]))
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])  # predicts 0, 0, 2
    module._log_train(logits, torch.tensor(1.0), out)
    module.epoch_means.flush(module.log, torch.device("cpu"))
    # against y = (0, 1, 2): hits 1, 0, 1; against y_b = (2, 0, 1): hits 0, 1, 0
    assert logged["train/acc"] == pytest.approx((0.3 * 2 + 0.7 * 1) / 3)
    assert logged["train/mixed"] == 1.0
    # flipped: sample 1 (y 1, clean 2) on the y side; y_b side: y_b (2, 0, 1) vs clean_b (2, 0, 2), sample 2
    # memorised: sample 1 predicts 0 != 1 (no); y_b side sample 2 predicts 2 != 1 (no): 0 / (0.3 + 0.7)
    assert logged["train/memorized"] == pytest.approx(0.0)
