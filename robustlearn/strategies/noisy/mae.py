"""Mean absolute error (MAE).

Ghosh, Kumar & Sastry, "Robust Loss Functions under Label Noise for Deep Neural Networks", AAAI 2017.

    L(f(x), y) = sum_k |e_y,k - f_k(x)| = (1 - f_y(x)) + sum_{k != y} f_k(x) = 2 (1 - f_y(x))

the L1 distance between the softmax f(x) and the one-hot label e_y. It is symmetric (the sum of the loss over all K
labels is the constant 2 (K - 1)), which the paper proves makes the risk minimiser tolerant to symmetric noise below
(K - 1) / K, but its gradient is 2 f_y(x) times the cross-entropy gradient: examples the network finds hard get
almost no weight, so MAE trains slowly and underfits on many classes.

Scale: this is the paper's L1 distance, 2 (1 - p_y). GCE with q = 1 (and the official code of Ma et al. 2020) use
1 - p_y, half of it; with SGD the factor 2 acts as a doubled learning rate, so compare tuned learning rates, not
losses. No parameters.

Use it as the most robust and slowest member of the family, on few classes or as a reference point; GCE, NCE+RCE or
Taylor-CE keep most of its robustness and fit faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy


@STRATEGIES.register("mae")
class MAE(Strategy):
    """Mean absolute error (Ghosh et al. 2017): sum_k |e_y,k - p_k| = 2 (1 - p_y)."""

    provides_loss = True

    @dataclass
    class Params:
        pass

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        p_y = torch.softmax(logits.float(), dim=1).gather(1, batch["y"][:, None]).squeeze(1)
        return 2.0 * (1.0 - p_y)
