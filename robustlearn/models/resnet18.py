"""ResNet-18 with the CIFAR stem."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from robustlearn.models.blocks import conv3x3, kaiming_init, maybe_dropout, norm2d, residual_stage
from robustlearn.models.checks import check_bool, check_dropout, dropout_field, image_shape
from robustlearn.registry import MODELS


@MODELS.register("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016, "Deep Residual Learning for Image Recognition", Table 1) with the CIFAR
    stem: a 3x3 stride-1 convolution (64) -> BN -> ReLU and no max-pool, then four stages of two basic blocks
    with widths 64, 128, 256, 512 and strides 1, 2, 2, 2, global average pooling, Dropout, fc.

    Shortcuts that change shape are 1x1 convolution + BN (option B). 11,173,962 parameters for 3x32x32 inputs
    and 10 classes. Kaiming-normal (fan_out) initialisation of the convolutions, PyTorch's default for the fc.
    Defaults: batchnorm true, dropout 0.0 (before the fc layer).
    """

    @dataclass
    class Params:
        dropout: float = dropout_field()
        batchnorm: bool = True

        def __post_init__(self) -> None:
            self.dropout = check_dropout(self.dropout, "dropout")
            self.batchnorm = check_bool(self.batchnorm, "batchnorm")

    widths = (64, 128, 256, 512)
    strides = (1, 2, 2, 2)

    def __init__(self, input_shape: Sequence[int], num_classes: int, params: ResNet18.Params | None = None):
        super().__init__()
        p = params if params is not None else self.Params()
        c, _, _ = image_shape(input_shape, "resnet18")
        bn = p.batchnorm
        self.stem = nn.Sequential(conv3x3(c, 64, 1, bn), norm2d(64, bn), nn.ReLU(inplace=True))
        stages, c_in = [], 64
        for width, stride in zip(self.widths, self.strides):
            stages.append(residual_stage(c_in, width, 2, stride, bn))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.dropout = maybe_dropout(p.dropout)
        self.fc = nn.Linear(512, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x)).mean(dim=(2, 3))
        return self.fc(self.dropout(x))
