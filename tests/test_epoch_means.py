"""EpochMeans: per-epoch training metrics summed on the device give exactly the means Lightning's self.log gave."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from robustlearn.epoch_means import EpochMeans
from robustlearn.runner import fit
from tests.protocol_helpers import rows, smoke


def _flushed(means: EpochMeans, **kwargs) -> dict[str, float]:
    logged = {}
    means.flush(lambda key, value, **kw: logged.__setitem__(key, float(value)), torch.device("cpu"), **kwargs)
    return logged


def test_a_mean_is_weighted_by_the_samples_of_each_step():
    means = EpochMeans()
    for value, n in ((1.0, 4), (3.0, 2), (0.5, 10)):
        means.add_mean("loss", torch.tensor(value), n)
    means.add_mean("host", 2.0, 3)  # a number known on the host
    assert _flushed(means) == pytest.approx({"loss": (4 + 6 + 5) / 16, "host": 2.0})
    assert _flushed(means) == {}  # reset by the flush


def test_a_sum_is_logged_as_the_total():
    means = EpochMeans()
    for seconds in (0.5, 0.25, 1.0):
        means.add_sum("full_pass_seconds", seconds)
    means.add_mean("loss", torch.tensor(2.0), 8)
    assert _flushed(means) == pytest.approx({"full_pass_seconds": 1.75, "loss": 2.0})


def test_the_seconds_of_full_passes_are_logged(tmp_path):
    import robustlearn.strategies.noisy.m_correction  # noqa: F401

    result = fit(smoke(tmp_path, "trainer.epochs=2",
                       "strategies=[{name: m_correction, start_epoch: 1, mixup_alpha: 0}]"), quiet=True)
    seconds = [r.get("train/full_pass_seconds", "") for r in rows(result["run_dir"])]
    assert any(s not in ("", None) and float(s) > 0 for s in seconds), seconds


def test_a_ratio_is_logged_only_where_its_denominator_is_positive():
    means = EpochMeans()
    means.add_ratio("memorized", torch.tensor(0), torch.tensor(0))
    means.add_ratio("kept", torch.tensor(3), torch.tensor(4))
    means.add_ratio("kept", torch.tensor(1), torch.tensor(4))
    assert _flushed(means) == pytest.approx({"kept": 0.5})


def test_the_training_metrics_of_a_run_are_the_means_over_its_steps(tmp_path):
    """train/loss and train/acc in metrics.csv against the step outputs, weighted by the batch sizes (the last batch
    of the smoke set is partial)."""

    class Steps(pl.Callback):
        def __init__(self):
            self.epochs: list[list[tuple[float, float, int]]] = []

        def on_train_epoch_start(self, trainer, pl_module):
            self.epochs.append([])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            b = outputs["batch"]
            acc = (outputs["logits"].argmax(1) == b["y"]).float().mean()
            self.epochs[-1].append((float(outputs["loss"]), float(acc), len(b["y"])))

    steps = Steps()
    result = fit(smoke(tmp_path, "trainer.epochs=2"), quiet=True, callbacks=[steps])
    assert result["status"] == "completed"
    for row, epoch in zip(rows(result["run_dir"]), steps.epochs, strict=True):
        n = sum(s[2] for s in epoch)
        assert len({s[2] for s in epoch}) == 2  # a partial last batch: the weights matter
        assert float(row["train/loss"]) == pytest.approx(sum(s[0] * s[2] for s in epoch) / n, rel=1e-5)
        assert float(row["train/acc"]) == pytest.approx(sum(s[1] * s[2] for s in epoch) / n, rel=1e-6)
