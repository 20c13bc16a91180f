"""The small 4-layer CNN: two convolutional blocks and two fully connected layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from robustlearn.models.blocks import maybe_dropout, norm1d, norm2d
from robustlearn.models.checks import (
    check_bool,
    check_dropout,
    check_positive_int,
    dropout_field,
    image_shape,
    positive_field,
)
from robustlearn.registry import MODELS


@MODELS.register("cnn")
class SmallCNN(nn.Module):
    """Four weight layers, w = `width`:

    `conv3x3(w, pad 1) -> BN -> ReLU -> maxpool2 -> conv3x3(2w, pad 1) -> BN -> ReLU -> maxpool2 -> flatten
    -> fc 128 -> BN -> ReLU -> Dropout -> fc num_classes`.

    The flatten size is 2w * floor(H/4) * floor(W/4), so 28x28, 32x32 and 8x8 inputs all work (H, W >= 4).
    PyTorch's default initialisation. Defaults: width 32, batchnorm true, dropout 0.0.
    """

    @dataclass
    class Params:
        dropout: float = dropout_field()
        batchnorm: bool = True
        width: int = positive_field(32)

        def __post_init__(self) -> None:
            self.dropout = check_dropout(self.dropout, "dropout")
            self.batchnorm = check_bool(self.batchnorm, "batchnorm")
            self.width = check_positive_int(self.width, "width")

    def __init__(self, input_shape: Sequence[int], num_classes: int, params: SmallCNN.Params | None = None):
        super().__init__()
        p = params if params is not None else self.Params()
        c, h, w = image_shape(input_shape, "cnn", min_size=4)
        w1, w2, bn = p.width, 2 * p.width, p.batchnorm
        self.features = nn.Sequential(
            nn.Conv2d(c, w1, 3, padding=1, bias=not bn),
            norm2d(w1, bn),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1, bias=not bn),
            norm2d(w2, bn),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        flat = w2 * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 128, bias=not bn),
            norm1d(128, bn),
            nn.ReLU(inplace=True),
            maybe_dropout(p.dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
