"""Building blocks shared by the models: optional normalisation and the residual basic block.

Convention used by every model: a convolution or linear layer that is followed by BatchNorm has no bias
(BatchNorm's shift plays that role); with `batchnorm: false` the normalisation is the identity and the layer
keeps its bias.
"""

from __future__ import annotations

from torch import Tensor, nn


def norm2d(channels: int, batchnorm: bool) -> nn.Module:
    """`BatchNorm2d(channels)` or the identity."""
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def norm1d(features: int, batchnorm: bool) -> nn.Module:
    """`BatchNorm1d(features)` or the identity."""
    return nn.BatchNorm1d(features) if batchnorm else nn.Identity()


def maybe_dropout(p: float) -> nn.Module:
    """`Dropout(p)` when p > 0, else the identity (so that no Dropout module exists at p = 0)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def conv3x3(c_in: int, c_out: int, stride: int, batchnorm: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm)


class BasicBlock(nn.Module):
    """The residual basic block of He et al. 2016 ("Deep Residual Learning for Image Recognition").

    `relu(bn(conv3x3(relu(bn(conv3x3_s(x))))) + shortcut(x))`, where the shortcut is the identity when the
    shape is kept and a 1x1 convolution with stride s followed by BatchNorm (projection, option B) when it
    changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, batchnorm: bool):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride, batchnorm)
        self.bn1 = norm2d(c_out, batchnorm)
        self.conv2 = conv3x3(c_out, c_out, 1, batchnorm)
        self.bn2 = norm2d(c_out, batchnorm)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batchnorm), norm2d(c_out, batchnorm)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def residual_stage(c_in: int, c_out: int, blocks: int, stride: int, batchnorm: bool) -> nn.Sequential:
    """`blocks` basic blocks; the first one has the stride and the channel change."""
    layers = [BasicBlock(c_in, c_out, stride, batchnorm)]
    layers += [BasicBlock(c_out, c_out, 1, batchnorm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def kaiming_init(model: nn.Module) -> None:
    """He initialisation of the convolutions (normal, fan_out, ReLU gain), BatchNorm scale 1 and shift 0, as
    in torchvision's ResNets; linear layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
