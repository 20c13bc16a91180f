"""The device-resident loader: batch contract, seeded order per (seed, epoch), subsets, DDP shards."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from robustlearn.data.gpu_loader import DeviceLoader, epoch_seed
from tests.conftest import SMOKE


def _loader(n=103, bs=10, epoch=0, **kw):
    tensors = {"x": torch.randn(n, 3), "y": torch.arange(n) % 4, "y_clean": torch.arange(n) % 4,
               "index": torch.arange(n)}
    state = {"epoch": epoch}
    loader = DeviceLoader(tensors, bs, shuffle=True, seed=7, epoch_fn=lambda: state["epoch"], **kw)
    return loader, state


def _order(loader):
    return torch.cat([b["index"] for b in loader])


def test_batches_follow_the_contract_and_cover_the_split():
    loader, _ = _loader()
    batches = list(loader)
    assert len(batches) == len(loader) == 11 and len(batches[-1]["index"]) == 3
    assert set(batches[0]) == {"x", "y", "y_clean", "index"}
    order = _order(loader)
    assert sorted(order.tolist()) == list(range(103))
    b = batches[0]
    torch.testing.assert_close(b["x"], loader.tensors["x"][b["index"]])


def test_order_depends_on_seed_and_epoch_only():
    a, state = _loader()
    first = _order(a)
    assert torch.equal(first, _order(a))  # same (seed, epoch): same order
    state["epoch"] = 1
    assert not torch.equal(first, _order(a))
    b, _ = _loader(epoch=0)
    assert torch.equal(first, _order(b))  # another loader, same (seed, epoch)
    assert epoch_seed(7, 0) != epoch_seed(7, 1) != epoch_seed(8, 0)


def test_set_indices_restricts_the_next_epochs():
    loader, _ = _loader()
    keep = torch.tensor([5, 9, 17, 40, 41])
    loader.set_indices(keep)
    assert len(loader) == 1 and sorted(_order(loader).tolist()) == keep.tolist()
    loader.set_indices(None)
    assert len(_order(loader)) == 103


def test_ddp_shards_cover_the_epoch_in_equal_steps():
    # 103 positions over 3 ranks: padded to 105 by wrapping around, so every rank takes 35 positions (4 steps of 10);
    # unequal step counts would hang DDP. The two repeated positions are the first two of the permutation.
    loaders = [_loader(rank=r, world_size=3)[0] for r in range(3)]
    shards = [_order(loader) for loader in loaders]
    assert [len(s) for s in shards] == [35, 35, 35] and {len(loader) for loader in loaders} == {4}
    joined = torch.cat(shards).tolist()
    assert sorted(set(joined)) == list(range(103)) and len(joined) == 105
    first_two = loaders[0]._order(0)[:1].tolist() + loaders[1]._order(0)[:1].tolist()
    assert sorted(x for x in set(joined) if joined.count(x) == 2) == sorted(first_two)


def test_one_run_over_two_cpu_processes_with_ddp(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "robustlearn", "fit", str(SMOKE), "trainer.accelerator=cpu", "trainer.devices=2",
         "trainer.strategy=ddp", f"output.root={tmp_path}", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/result.json")]
    assert result["status"] == "completed" and result["epochs_done"] == 2 and result["test_acc_last"] > 0.5


def test_drop_last_gives_one_batch_shape_and_never_an_empty_epoch():
    loader, _ = _loader(n=103, bs=10, drop_last=True)
    assert len(loader) == 10 and [len(b["index"]) for b in loader] == [10] * 10
    small, _ = _loader(n=7, bs=10, drop_last=True)  # fewer samples than a batch: keep the one partial batch
    assert len(small) == 1 and [len(b["index"]) for b in small] == [7]
