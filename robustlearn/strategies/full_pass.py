"""`full_pass`: the logits of the whole training split in eval mode, without gradient, in position order.

Written once for the methods that look at every training sample once per epoch: loss-correction's transition
estimate, M-correction's and DivideMix's mixtures, confident learning, InfoBatch scores, the diagnostics. Works on both
loader paths: the split is read through the datamodule's `train_tensors()` and moved to the training device one
chunk at a time. Not augmented (the estimates are of the data, not of one random view).
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from torch import nn

from robustlearn.strategies.scoring import scoring


def full_pass(module: pl.LightningModule, dm, net: nn.Module | None = None,
              batch_size: int | None = None) -> torch.Tensor:
    """Logits `(N, K)` of `net` (default: the module) on the training split, float32, on the training device.

    Position i holds sample `index == i`. Costs one forward pass over the split at `data.eval_batch_size`; the seconds
    every pass of an epoch took are summed into `train/full_pass_seconds` (on `RobustClassifier`)."""
    started = time.perf_counter()
    tensors = dm.train_tensors()
    device = module.device
    size = batch_size or dm.data_cfg.eval_batch_size
    forward = net if net is not None else module
    chunks = []
    with scoring(module, *([net] if net is not None else [])):
        for start in range(0, len(tensors["y"]), size):
            x = tensors["x"][start : start + size].to(device, non_blocking=True)
            chunks.append(forward(x).float())
    logits = torch.cat(chunks)
    if logits.is_cuda:
        torch.cuda.synchronize(logits.device)  # once per pass: the time is the pass's, not its launch's
    means = getattr(module, "epoch_means", None)
    if means is not None:
        means.add_sum("train/full_pass_seconds", time.perf_counter() - started)
    return logits
