"""A training epoch never ends with a batch of one sample (BatchNorm cannot train on it); evaluation keeps every one."""

from __future__ import annotations

import torch

from robustlearn.data.gpu_loader import DeviceLoader, trained_length
from robustlearn.data.sampler import EpochSampler
from robustlearn.runner import fit
from tests.protocol_helpers import rows, smoke


def test_trained_length():
    assert trained_length(129, 64, False, True) == 128  # a lone last sample sits out
    assert trained_length(130, 64, False, True) == 130  # a last batch of two trains
    assert trained_length(129, 64, False, False) == 129  # evaluation: every sample
    assert trained_length(129, 64, True, True) == 128 and trained_length(150, 64, True, True) == 128  # full batches
    assert trained_length(1, 64, False, True) == 1 and trained_length(5, 1, False, True) == 5  # nothing else to train


def test_both_loader_paths_skip_only_a_lone_last_sample():
    tensors = {"x": torch.randn(129, 3), "y": torch.zeros(129, dtype=torch.long), "index": torch.arange(129)}
    train = DeviceLoader(tensors, 64, shuffle=True, drop_single=True)
    assert len(train) == 2 and [len(b["y"]) for b in train] == [64, 64]
    evaluation = DeviceLoader(tensors, 64, shuffle=False)
    assert len(evaluation) == 3 and [len(b["y"]) for b in evaluation] == [64, 64, 1]
    sampler = EpochSampler(129, 0, lambda: 0, batch_size=64, drop_single=True)
    assert len(sampler) == 128 and len(list(sampler)) == 128 and len(set(sampler)) == 128


def test_a_batchnorm_network_trains_when_the_split_leaves_one_sample_over(tmp_path):
    # 1800 training samples in batches of 1799: the second batch would hold one sample
    result = fit(smoke(tmp_path, "model.batchnorm=true", "data.batch_size=1799", "trainer.epochs=1"), quiet=True)
    assert result["status"] == "completed", result["error"]
    assert int(rows(result["run_dir"])[0]["samples"]) == 1799
