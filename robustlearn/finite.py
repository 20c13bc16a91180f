"""`FiniteLossWatch`: notice a non-finite training loss without making the step wait for the GPU.

Each step records on the device, with no read to the host, the (epoch, step) of the first non-finite loss. The
module reads that pair every `trainer.log_every_n_steps` steps and at the end of every epoch (before its checkpoint is
written) and then stops the run with `RunFailed`, naming the epoch and the step where the loss first went non-finite.
"""

from __future__ import annotations

import torch
from torch import nn

from robustlearn.errors import RunFailed


class FiniteLossWatch(nn.Module):
    def __init__(self):
        super().__init__()
        # (epoch, step) of the first non-finite loss, -1 while none; the current (epoch, step). Not checkpointed.
        self.register_buffer("first", torch.full((2,), -1, dtype=torch.long), persistent=False)
        self.register_buffer("here", torch.zeros(2, dtype=torch.long), persistent=False)

    def watch(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        """Record this step's loss (no host sync: a fill and a select on the device)."""
        self.here[0].fill_(epoch)
        self.here[1].fill_(step)
        bad = ~torch.isfinite(loss) & (self.first[0] < 0)
        self.first.copy_(torch.where(bad, self.here, self.first))

    def raise_if_seen(self) -> None:
        """Read the record (one sync) and raise where a non-finite loss was seen."""
        epoch, step = self.first.tolist()
        if epoch >= 0:
            raise RunFailed(
                f"non-finite training loss at epoch {epoch}, step {step} (first seen there); lower optim.lr, set "
                "trainer.grad_clip, or check the strategy's parameters."
            )
