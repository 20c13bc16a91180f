"""`scoring(*nets)`: score samples without training on them — no gradient, every layer in eval mode.

BatchNorm then uses (and does not update) its running statistics and dropout is off, as in the official code of
presampling (Katharopoulos & Fleuret 2018) and of the full passes of DivideMix and M-correction. The mode of every
submodule is restored afterwards, including submodules that were in eval mode on purpose (frozen BatchNorm).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def scoring(*nets: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for net in nets for m in net.modules()]
    try:
        for net in nets:
            net.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
