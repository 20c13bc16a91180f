"""The CIFAR-10 convolutional network of Byrd & Lipton 2019."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from robustlearn.models.blocks import maybe_dropout, norm1d, norm2d
from robustlearn.models.checks import check_bool, check_dropout, dropout_field, image_shape
from robustlearn.registry import MODELS


def _conv(c_in: int, c_out: int, bn: bool) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, bias=not bn), norm2d(c_out, bn), nn.ReLU(inplace=True)]


def _fc(f_in: int, f_out: int, bn: bool, dropout: float) -> list[nn.Module]:
    return [
        nn.Linear(f_in, f_out, bias=not bn),
        norm1d(f_out, bn),
        nn.ReLU(inplace=True),
        maybe_dropout(dropout),
    ]


def _side(size: int) -> int:
    """Spatial size after two valid convs, a 2x2 pool, three valid convs and a 2x2 pool."""
    return ((size - 4) // 2 - 6) // 2


@MODELS.register("byrd_lipton_cnn")
class ByrdLiptonCNN(nn.Module):
    """Byrd & Lipton 2019, "What is the Effect of Importance Weighting in Deep Learning?" (ICML), the small
    CNN of their CIFAR-10 binary (e.g. cat vs dog) experiments:

    `conv3x3 64 -> conv3x3 64 -> maxpool2 -> conv3x3 128 -> conv3x3 128 -> conv3x3 128 -> maxpool2 -> fc 512
    -> fc 128 -> fc num_classes`, ReLU after every hidden layer, stride 1.

    The paper does not state the padding; the convolutions here are unpadded ("valid"), so a 32x32 input ends
    as a 128x4x4 map (28x28: 128x3x3); inputs need H, W >= 20. With `batchnorm: true` a BatchNorm follows
    every hidden convolution and fc layer (before its ReLU); with `dropout > 0` a Dropout follows each of the
    two hidden fc layers. PyTorch's default initialisation. Defaults: batchnorm false and dropout 0.0 (the
    paper's base network; both are among the paper's studied variants).
    """

    @dataclass
    class Params:
        dropout: float = dropout_field()
        batchnorm: bool = False

        def __post_init__(self) -> None:
            self.dropout = check_dropout(self.dropout, "dropout")
            self.batchnorm = check_bool(self.batchnorm, "batchnorm")

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, params: ByrdLiptonCNN.Params | None = None
    ):
        super().__init__()
        p = params if params is not None else self.Params()
        c, h, w = image_shape(input_shape, "byrd_lipton_cnn", min_size=20)
        bn = p.batchnorm
        self.features = nn.Sequential(
            *_conv(c, 64, bn),
            *_conv(64, 64, bn),
            nn.MaxPool2d(2),
            *_conv(64, 128, bn),
            *_conv(128, 128, bn),
            *_conv(128, 128, bn),
            nn.MaxPool2d(2),
        )
        flat = 128 * _side(h) * _side(w)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            *_fc(flat, 512, bn, p.dropout),
            *_fc(512, 128, bn, p.dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
