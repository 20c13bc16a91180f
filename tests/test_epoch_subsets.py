"""Epoch subsets: a strategy that trains some epochs on a subset still gets validation and test every epoch, resumes
exactly, anneals a one-cycle schedule to its floor, and runs the same on both loader paths and under DDP."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from robustlearn.registry import STRATEGIES
from robustlearn.runner import fit
from robustlearn.strategies.base import Strategy
from tests.protocol_helpers import Recorder, assert_resumes_exactly, fit_on_two_cpu_ranks, rows, smoke
from tests.test_resume import comparable_rows

# 1800 training samples, batch 64: 29 steps on all of them, 15 on the 900 that example_prune keeps.
PRUNE = "strategies=[{name: example_prune, fraction: 0.5, start_epoch: 1}, {name: example_elr}]"


def test_pruned_epochs_are_shorter_and_still_validated_and_tested(tmp_path):
    rec = Recorder()
    result = fit(smoke(tmp_path, PRUNE, "trainer.epochs=4"), quiet=True, callbacks=[rec])
    assert result["status"] == "completed"
    assert rec.steps == [29, 15, 15, 29]  # the last epoch trains on all samples again
    assert rec.validated == [0, 1, 2, 3]
    r = rows(result["run_dir"])
    assert [float(x["example_prune/kept"]) for x in r] == [1800, 900, 900, 1800]  # log_metric reaches metrics.csv
    for key in ("val/loss", "test/loss", "val/acc", "test/acc"):
        assert all(x[key] != "" for x in r)
    for prev, cur in zip(r, r[1:]):  # fresh values every epoch, not the previous epoch's repeated
        assert cur["val/loss"] != prev["val/loss"] and cur["test/loss"] != prev["test/loss"]


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_pruned_run_resumes_exactly(tmp_path, scheduler):
    rec = Recorder()
    assert_resumes_exactly(tmp_path, [PRUNE, "trainer.epochs=4", f"scheduler.name={scheduler}"], callbacks=[rec])
    assert rec.steps == [15, 29]  # the subset chosen before the interruption sizes the first resumed epoch


def test_onecycle_anneals_to_its_floor_with_pruned_epochs(tmp_path):
    rec = Recorder()
    fit(smoke(tmp_path, PRUNE, "trainer.epochs=4", "scheduler.name=onecycle", "scheduler.pct_start=0.3"),
        quiet=True, callbacks=[rec])
    peak, floor = 0.1, 0.1 / 25 / 1e4
    lrs = torch.tensor(rec.lrs)
    assert len(lrs) == 29 + 15 + 15 + 29
    assert lrs[0] == pytest.approx(peak / 25)
    assert float(lrs.max()) == pytest.approx(peak, rel=1e-3)
    # The peak falls at 30 % of training progress: 1.2 epochs, i.e. 3 of the 15 steps of epoch 1.
    assert int(lrs.argmax()) == 29 + 3
    assert float(lrs[-1]) < 1e-3 * peak and rec.final_lr == pytest.approx(floor)


def test_both_loader_paths_train_the_same_pruned_run(tmp_path):
    device = fit(smoke(tmp_path / "d", PRUNE, "trainer.epochs=3"), quiet=True)
    loader = fit(smoke(tmp_path / "l", PRUNE, "trainer.epochs=3", "data.loader=dataloader"), quiet=True)
    assert comparable_rows(device["run_dir"]) == comparable_rows(loader["run_dir"])


@STRATEGIES.register("test_batch_size")
class _BatchSize(Strategy):
    @dataclass
    class Params:
        size: int = 128

    def on_train_epoch_end(self, trainer, pl_module):
        self.datamodule(trainer).set_train_batch_size(self.params.size)


@pytest.mark.parametrize("loader", ["device", "dataloader"])
def test_batch_size_set_for_the_next_epoch(tmp_path, loader):
    rec = Recorder()
    fit(smoke(tmp_path, "strategies=[{name: test_batch_size, size: 128}]", "trainer.epochs=2",
              f"data.loader={loader}"), quiet=True, callbacks=[rec])
    assert rec.steps == [29, math.ceil(1800 / 128)]


def test_subset_is_checked(tmp_path):
    from robustlearn.data.datamodule import RobustDataModule

    dm = RobustDataModule(smoke(tmp_path)).load()
    for bad in (torch.tensor([], dtype=torch.long), torch.tensor([0.5]), torch.tensor([1800]), torch.tensor([-1])):
        with pytest.raises(ValueError, match="set_train_subset"):
            dm.set_train_subset(bad)
    dm.set_train_subset(torch.tensor([7, 3, 7]))
    assert dm.train_subset.tolist() == [3, 7]
    with pytest.raises(ValueError, match="set_train_batch_size"):
        dm.set_train_batch_size(0)


def test_draws_come_from_the_subset_or_from_the_whole_split(tmp_path):
    from robustlearn.data.datamodule import RobustDataModule

    dm = RobustDataModule(smoke(tmp_path)).load()
    dm.set_train_subset(torch.tensor([3, 7]))
    y = dm.train_tensors()["y"]
    g = torch.Generator().manual_seed(0)
    sub = dm.draw(400, generator=g)
    assert set(sub["index"].tolist()) <= {int(dm.train_tensors()["index"][i]) for i in (3, 7)}
    whole = dm.draw(400, generator=torch.Generator().manual_seed(0), source="split")
    assert len(set(whole["index"].tolist())) > 300 and whole["y"].shape == (400,) and y.numel() == 1800
    with pytest.raises(ValueError, match="source"):
        dm.draw(4, source="all")


def test_views_are_independent_augmentations_drawn_again_for_the_same_step(tmp_path):
    from robustlearn.data.datamodule import RobustDataModule

    dm = RobustDataModule(smoke(tmp_path)).load()  # synthetic vectors: no augmentation, the views are the images
    index = torch.tensor([5, 0, 9])
    v = dm.views(index, 2, step=3)
    assert v.shape == (2, 3, *dm.train_tensors()["x"].shape[1:])
    assert torch.equal(v[0], dm.train_tensors()["x"][index]) and torch.equal(v[1], v[0])
    dm.crop_padding, dm.hflip = 2, True  # as an image dataset's default augmentation
    dm.train_tensors()["x"] = torch.randn(1800, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b = dm.views(index, 3, step=3), dm.views(index, 3, step=3)
    assert a.shape == (3, 3, 1, 8, 8) and torch.equal(a, b)  # deterministic in the step: resume draws them again
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])  # independent views
    assert not torch.equal(dm.views(index, 1, step=4)[0], a[0])  # a new step, new views
    with pytest.raises(ValueError, match="views"):
        dm.views(index, 0)


def test_ddp_ranks_share_the_kept_set_the_peer_and_per_sample_parameters(tmp_path):
    """Two CPU processes: pruning from per-rank losses, a DDP-wrapped peer network, and SOP's per-sample parameters
    (each rank's rows get gradient from its own shard; both ranks end with the same u and v)."""
    dump = fit_on_two_cpu_ranks("ddp_protocol_fit.py", tmp_path, "trainer.epochs=3",
                                "strategies=[{name: example_prune, fraction: 0.5}, {name: example_peer}, "
                                "{name: sop, lr_v: 100, init_std: 0.001}]")
    (result,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/result.json")]
    assert result["status"] == "completed" and result["epochs_done"] == 3
    ranks = [torch.load(dump / f"rank{r}.pt") for r in (0, 1)]
    subsets = [r["subsets"] for r in ranks]
    assert subsets[0][0] is None and len(subsets[0][1]) == 900 and subsets[0][2] is None
    assert torch.equal(subsets[0][1], subsets[1][1])
    assert ranks[0]["steps"] == ranks[1]["steps"] == [15, 8, 15]  # 900 samples per rank, then 450, then 900
    for a, b in zip(ranks[0]["peer"], ranks[1]["peer"]):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(ranks[0]["peer"], ranks[0]["main"]))
    assert torch.equal(ranks[0]["u"], ranks[1]["u"]) and torch.equal(ranks[0]["v"], ranks[1]["v"])
    assert (ranks[0]["v"].abs() > 0.01).sum() > 20  # rows of both ranks' shards moved, on both copies
