"""Taylor cross-entropy (Taylor-CE).

Feng, Shu, Lin, Lv, Li & An, "Can Cross Entropy Loss Be Robust to Label Noise?", IJCAI 2020.

    L_t(f(x), y) = sum_{k=1..t} (1 - f_y(x))^k / k,      t >= 1 an integer (order)

the first t terms of the Taylor series of -log f_y around f_y = 1, -log p = sum_{k>=1} (1 - p)^k / k. t = 1 is
1 - p_y (half the MAE of Ghosh et al., GCE with q = 1); as t grows the loss approaches cross-entropy. The paper's
analysis favours low orders for robustness, while high orders fit the labels faster: t trades robustness against
fitting, as GCE's q does. The loss is bounded by sum_{k<=t} 1/k.

Computed by Horner's rule on u = 1 - p_y = -expm1(log p_y): u (1 + u (1/2 + u (1/3 + ...))). Default order 2 (the
lowest order above MAE; the paper treats t as a hyperparameter chosen per dataset).

Use it like GCE: symmetric or moderate noise where cross-entropy memorises the flipped labels and MAE underfits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_whole
from robustlearn.tuning.space import Int


@STRATEGIES.register("taylor_ce")
class TaylorCE(Strategy):
    """Taylor cross-entropy (Feng et al. 2020): sum_{k<=t} (1 - p_y)^k / k."""

    # the ranges `robustlearn tune` searches (docs/tuning.md); the paper\'s values lie inside
    search_space = {"order": Int(1, 10)}

    provides_loss = True

    @dataclass
    class Params:
        order: int = 2  # t, the number of Taylor terms (integer >= 1); 1: 1 - p_y, large: cross-entropy

        def __post_init__(self):
            if not is_whole(self.order):
                raise ConfigError(f"taylor_ce: order = {self.order!r} must be an integer >= 1.", "order")
            if self.order < 1:
                raise ConfigError(f"taylor_ce: order = {self.order!r} is out of range; it must be >= 1.", "order")

    def loss(self, logits: torch.Tensor, batch: dict, module=None) -> torch.Tensor:
        log_p_y = torch.log_softmax(logits.float(), dim=1).gather(1, batch["y"][:, None]).squeeze(1)
        u = -torch.expm1(log_p_y)  # 1 - p_y
        acc = torch.full_like(u, 1.0 / self.params.order)
        for k in range(self.params.order - 1, 0, -1):
            acc = 1.0 / k + u * acc
        return u * acc
