"""A small residual network for 28x28 / 32x32 images (the CIFAR ResNet family of He et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from robustlearn.models.blocks import conv3x3, kaiming_init, maybe_dropout, norm2d, residual_stage
from robustlearn.models.checks import (
    check_bool,
    check_dropout,
    check_positive_int,
    dropout_field,
    image_shape,
    positive_field,
)
from robustlearn.registry import MODELS


@MODELS.register("resnet_small")
class ResNetSmall(nn.Module):
    """Residual CNN after He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2.

    `stem conv3x3(w) -> BN -> ReLU`, three stages of `blocks_per_stage` basic blocks with widths w, 2w, 4w and
    strides 1, 2, 2, global average pooling, Dropout, fc. With n = blocks_per_stage the depth is 6n + 2
    (n = 2: ResNet-14; n = 3: ResNet-20). Where the shape changes the shortcut is a 1x1 convolution + BN
    (projection, option B) rather than the paper's zero-padding (option A).
    Kaiming-normal (fan_out) initialisation of the convolutions; PyTorch's default for the fc layer.
    Defaults: width 16, blocks_per_stage 2, batchnorm true, dropout 0.0 (before the fc layer).
    """

    @dataclass
    class Params:
        dropout: float = dropout_field()
        batchnorm: bool = True
        width: int = positive_field(16)
        blocks_per_stage: int = positive_field(2)

        def __post_init__(self) -> None:
            self.dropout = check_dropout(self.dropout, "dropout")
            self.batchnorm = check_bool(self.batchnorm, "batchnorm")
            self.width = check_positive_int(self.width, "width")
            self.blocks_per_stage = check_positive_int(self.blocks_per_stage, "blocks_per_stage")

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, params: ResNetSmall.Params | None = None
    ):
        super().__init__()
        p = params if params is not None else self.Params()
        c, _, _ = image_shape(input_shape, "resnet_small")
        w, n, bn = p.width, p.blocks_per_stage, p.batchnorm
        self.stem = nn.Sequential(conv3x3(c, w, 1, bn), norm2d(w, bn), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(
            residual_stage(w, w, n, 1, bn),
            residual_stage(w, 2 * w, n, 2, bn),
            residual_stage(2 * w, 4 * w, n, 2, bn),
        )
        self.dropout = maybe_dropout(p.dropout)
        self.fc = nn.Linear(4 * w, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x)).mean(dim=(2, 3))
        return self.fc(self.dropout(x))
