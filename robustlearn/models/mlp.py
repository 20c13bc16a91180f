"""Multi-layer perceptron on the flattened input."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from robustlearn.models.blocks import maybe_dropout, norm1d
from robustlearn.models.checks import check_bool, check_dropout, check_int_list, dropout_field
from robustlearn.registry import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
    """Fully connected network: flatten, then for each width h in `hidden`
    `Linear(h) -> BatchNorm1d (if batchnorm) -> ReLU -> Dropout (if dropout > 0)`, then `Linear(num_classes)`.

    Takes any input shape (tabular `(D,)` or images, which are flattened in (C, H, W) order whatever their
    memory format). `hidden: []` gives multinomial logistic regression. PyTorch's default initialisation.
    Defaults: hidden [256, 256], dropout 0.0, batchnorm false.
    """

    @dataclass
    class Params:
        hidden: list[int] = field(default_factory=lambda: [256, 256], metadata={"ge": 1})
        dropout: float = dropout_field()
        batchnorm: bool = False

        def __post_init__(self) -> None:
            self.hidden = check_int_list(self.hidden, "hidden")
            self.dropout = check_dropout(self.dropout, "dropout")
            self.batchnorm = check_bool(self.batchnorm, "batchnorm")

    def __init__(self, input_shape: Sequence[int], num_classes: int, params: MLP.Params | None = None):
        super().__init__()
        p = params if params is not None else self.Params()
        width = math.prod(int(s) for s in input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for h in p.hidden:
            layers += [
                nn.Linear(width, h, bias=not p.batchnorm),
                norm1d(h, p.batchnorm),
                nn.ReLU(inplace=True),
                maybe_dropout(p.dropout),
            ]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
