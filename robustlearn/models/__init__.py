"""The models, registered by name in `robustlearn.registry.MODELS`, and `build_model`.

Every model takes `input_shape` — `(C, H, W)` for images (float, contiguous or channels_last) or `(D,)`
for tabular data — and `num_classes`, returns logits `(B, num_classes)`, and carries a `Params` dataclass of
its own `model.*` keys. See docs/models.md for the layouts, parameter counts and papers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from robustlearn.models import allcnn, byrd_lipton_cnn, cnn, mlp, resnet18, resnet_small
from robustlearn.models.checks import make_params
from robustlearn.registry import MODELS

__all__ = ["build_model", "allcnn", "byrd_lipton_cnn", "cnn", "mlp", "resnet18", "resnet_small"]


def build_model(
    name: str, params: Mapping[str, Any] | None, input_shape: Sequence[int], num_classes: int
) -> nn.Module:
    """The registered model `name` built with its `model.*` keys `params` (a `name` key there is ignored).

    Raises ConfigError naming `model.name` for an unknown model or an input shape it cannot take, and
    `model.<key>` for an unknown key or a bad value.
    """
    cls = MODELS.get(name, key="model.name")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return cls(tuple(int(s) for s in input_shape), num_classes, make_params(cls.Params, params, name))
