"""All-CNN-C of Springenberg et al. 2015."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from robustlearn.models.blocks import maybe_dropout, norm2d
from robustlearn.models.checks import check_bool, check_dropout, dropout_field, image_shape
from robustlearn.registry import MODELS


def _conv(c_in: int, c_out: int, kernel: int, stride: int, padding: int, bn: bool) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=not bn),
        norm2d(c_out, bn),
        nn.ReLU(inplace=True),
    ]


@MODELS.register("allcnn")
class AllCNN(nn.Module):
    """All-CNN-C of Springenberg, Dosovitskiy, Brox & Riedmiller 2015, "Striving for Simplicity: The All
    Convolutional Net" (ICLR workshop), Table 2, where strided convolutions replace max-pooling:

    `Dropout(input_dropout) -> conv3x3 96 -> conv3x3 96 -> conv3x3 96 stride 2 -> Dropout -> conv3x3 192
    -> conv3x3 192 -> conv3x3 192 stride 2 -> Dropout -> conv3x3 192 (valid) -> conv1x1 192
    -> conv1x1 num_classes -> global average pool`, ReLU after every convolution but the last.

    3x3 convolutions are padded by 1 except the valid one, so 32x32 inputs reach the class layer at 6x6
    (28x28: 5x5); inputs need H, W >= 9. The paper applies ReLU to the class maps too; here they stay linear
    so logits can be negative. With `batchnorm: true` a BatchNorm follows every convolution but the last (the
    paper has none). PyTorch's default initialisation. Defaults as in the paper: dropout 0.5 after each
    strided convolution, input_dropout 0.2 on the input image, batchnorm false.
    """

    @dataclass
    class Params:
        dropout: float = dropout_field(0.5)
        input_dropout: float = dropout_field(0.2)
        batchnorm: bool = False

        def __post_init__(self) -> None:
            self.dropout = check_dropout(self.dropout, "dropout")
            self.input_dropout = check_dropout(self.input_dropout, "input_dropout")
            self.batchnorm = check_bool(self.batchnorm, "batchnorm")

    def __init__(self, input_shape: Sequence[int], num_classes: int, params: AllCNN.Params | None = None):
        super().__init__()
        p = params if params is not None else self.Params()
        c, _, _ = image_shape(input_shape, "allcnn", min_size=9)
        bn = p.batchnorm
        self.net = nn.Sequential(
            maybe_dropout(p.input_dropout),
            *_conv(c, 96, 3, 1, 1, bn),
            *_conv(96, 96, 3, 1, 1, bn),
            *_conv(96, 96, 3, 2, 1, bn),
            maybe_dropout(p.dropout),
            *_conv(96, 192, 3, 1, 1, bn),
            *_conv(192, 192, 3, 1, 1, bn),
            *_conv(192, 192, 3, 2, 1, bn),
            maybe_dropout(p.dropout),
            *_conv(192, 192, 3, 1, 0, bn),
            *_conv(192, 192, 1, 1, 0, bn),
            nn.Conv2d(192, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).mean(dim=(2, 3))
