"""Models: output shapes, memory format, BatchNorm/Dropout switches, hand-counted sizes, gradients, errors."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
from torch import nn

from robustlearn.errors import ConfigError
from robustlearn.models import build_model
from robustlearn.registry import MODELS

FMNIST, CIFAR, DIGITS, TABULAR = (1, 28, 28), (3, 32, 32), (1, 8, 8), (2,)
SUPPORTED = {
    "mlp": [TABULAR, FMNIST, CIFAR, DIGITS],
    "cnn": [FMNIST, CIFAR, DIGITS],
    "resnet_small": [FMNIST, CIFAR, DIGITS],
    "resnet18": [FMNIST, CIFAR, DIGITS],
    "byrd_lipton_cnn": [FMNIST, CIFAR],
    "allcnn": [FMNIST, CIFAR],
}
REJECTED = [(name, shape) for name, ok in SUPPORTED.items() for shape in (TABULAR, DIGITS) if shape not in ok]
NAMES = MODELS.names()
# A small 3-channel image each model takes, for the checks that do not depend on the dataset's size.
SMALL = {"byrd_lipton_cnn": (3, 20, 20), "allcnn": (3, 12, 12)}
# Keys that switch every Dropout off (allcnn also drops its input).
NO_DROPOUT = {"allcnn": {"dropout": 0.0, "input_dropout": 0.0}}


def _input(shape, batch=4, seed=0):
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))


def _count(name, params, shape, num_classes) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(name, params, shape, num_classes)
    return sum(p.numel() for p in model.parameters())


def _has(model: nn.Module, kind: type) -> bool:
    return any(isinstance(m, kind) for m in model.modules())


# Parameter counts by hand: conv k x k = c_in*c_out*k*k (+ c_out bias), linear = f_in*f_out (+ f_out),
# BatchNorm = 2 * channels. Layers followed by BatchNorm carry no bias.
def conv(c_in, c_out, k, bias):
    return c_in * c_out * k * k + (c_out if bias else 0)


def lin(f_in, f_out, bias=True):
    return f_in * f_out + (f_out if bias else 0)


def cnn_count(c, h, w, k, width=32, bn=True):
    w1, w2, norm = width, 2 * width, (lambda n: 2 * n if bn else 0)
    return (
        conv(c, w1, 3, not bn) + norm(w1) + conv(w1, w2, 3, not bn) + norm(w2)
        + lin(w2 * (h // 4) * (w // 4), 128, not bn) + norm(128) + lin(128, k)
    )  # fmt: skip


def block_count(c_in, c_out, stride, bn=True):
    norm = 2 * c_out if bn else 0
    main = conv(c_in, c_out, 3, not bn) + norm + conv(c_out, c_out, 3, not bn) + norm
    shortcut = conv(c_in, c_out, 1, not bn) + norm if (stride != 1 or c_in != c_out) else 0
    return main + shortcut


def resnet_count(c, k, widths, blocks, bn=True):
    total = conv(c, widths[0], 3, not bn) + (2 * widths[0] if bn else 0)
    c_in = widths[0]
    for i, width in enumerate(widths):
        stride = 1 if i == 0 else 2
        total += block_count(c_in, width, stride, bn) + (blocks - 1) * block_count(width, width, 1, bn)
        c_in = width
    return total + lin(widths[-1], k)


def test_all_models_are_registered():
    assert set(NAMES) == set(SUPPORTED)
    for name in NAMES:
        assert MODELS.get(name).registry_name == name


@pytest.mark.parametrize("name", NAMES)
def test_params_are_typed_dataclasses_with_defaults(name):
    params = MODELS.get(name).Params
    hints = typing.get_type_hints(params)
    for f in dataclasses.fields(params):
        assert f.name in hints
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    assert hints.get("dropout") is float and hints.get("batchnorm") is bool


@pytest.mark.parametrize(("name", "shape"), [(n, s) for n, shapes in SUPPORTED.items() for s in shapes])
def test_output_shape(name, shape):
    num_classes = 2 if shape in (TABULAR, DIGITS) else 10
    model = build_model(name, {}, shape, num_classes).eval()
    with torch.no_grad():
        assert model(_input(shape, batch=2)).shape == (2, num_classes)


@pytest.mark.parametrize(("name", "shape"), REJECTED)
def test_shape_the_model_cannot_take(name, shape):
    with pytest.raises(ConfigError, match=str(shape).replace("(", r"\(").replace(")", r"\)")) as err:
        build_model(name, None, shape, 10)
    assert err.value.key == "model.name"
    assert name in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_gives_the_same_logits(name):
    torch.manual_seed(0)
    shape = SMALL.get(name, (3, 8, 8))
    model = build_model(name, None, shape, 10).eval()
    x = _input(shape)
    with torch.no_grad():
        ref = model(x)
        same = model(x.contiguous(memory_format=torch.channels_last))
        model = model.to(memory_format=torch.channels_last)
        both = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(same, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_batchnorm_switch(name):
    shape = SUPPORTED[name][-1]
    assert _has(build_model(name, {"batchnorm": True}, shape, 10), nn.modules.batchnorm._BatchNorm)
    model = build_model(name, {"batchnorm": False}, shape, 10)
    assert not _has(model, nn.modules.batchnorm._BatchNorm)
    model.train()
    model(_input(shape, batch=1))  # no BatchNorm: a batch of one is fine in training mode


@pytest.mark.parametrize("name", NAMES)
def test_dropout_appears_when_positive(name):
    shape = SUPPORTED[name][-1]
    with torch.device("meta"):
        model = build_model(name, {"dropout": 0.3}, shape, 10)
        without = build_model(name, NO_DROPOUT.get(name, {"dropout": 0.0}), shape, 10)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in model.modules())
    assert not _has(without, nn.Dropout)


def test_allcnn_defaults_follow_the_paper():
    model = build_model("allcnn", None, CIFAR, 10)
    assert sorted(m.p for m in model.modules() if isinstance(m, nn.Dropout)) == [0.2, 0.5, 0.5]
    assert not _has(model, nn.modules.batchnorm._BatchNorm)


def test_cnn_parameter_count():
    # FMNIST: 288+64 | 18432+128 | 3136*128+256 | 1280+10
    assert _count("cnn", None, FMNIST, 10) == 421_866 == cnn_count(1, 28, 28, 10)
    # CIFAR: 864+64 | 18432+128 | 4096*128+256 | 1280+10
    assert _count("cnn", None, CIFAR, 10) == 545_322 == cnn_count(3, 32, 32, 10)
    assert _count("cnn", None, DIGITS, 10) == cnn_count(1, 8, 8, 10)
    no_bn = _count("cnn", {"batchnorm": False, "width": 16}, CIFAR, 2)
    assert no_bn == cnn_count(3, 32, 32, 2, width=16, bn=False)


def test_resnet18_parameter_count():
    widths = (64, 128, 256, 512)
    # The widely quoted size of the CIFAR ResNet-18.
    assert _count("resnet18", None, CIFAR, 10) == 11_173_962 == resnet_count(3, 10, widths, 2)
    assert _count("resnet18", None, FMNIST, 10) == resnet_count(1, 10, widths, 2)
    no_bn = _count("resnet18", {"batchnorm": False}, CIFAR, 100)
    assert no_bn == resnet_count(3, 100, widths, 2, bn=False)


def test_resnet_small_parameter_count():
    assert _count("resnet_small", None, CIFAR, 10) == resnet_count(3, 10, (16, 32, 64), 2)
    deeper = _count("resnet_small", {"width": 8, "blocks_per_stage": 3}, FMNIST, 10)
    assert deeper == resnet_count(1, 10, (8, 16, 32), 3)


def test_mlp_parameter_count():
    assert _count("mlp", None, FMNIST, 10) == lin(784, 256) + lin(256, 256) + lin(256, 10)
    with_bn = _count("mlp", {"hidden": [64], "batchnorm": True}, TABULAR, 3)
    assert with_bn == lin(2, 64, bias=False) + 2 * 64 + lin(64, 3)
    assert _count("mlp", {"hidden": []}, TABULAR, 3) == lin(2, 3)


def test_paper_models_parameter_count():
    # All-CNN-C on CIFAR-10, no BatchNorm, 3x3: 3->96, 96->96, 96->96, 96->192, 3x 192->192;
    # 1x1: 192->192, 192->10
    allcnn = 2688 + 83_040 + 83_040 + 166_080 + 3 * 331_968 + 37_056 + 1930
    assert allcnn == 1_369_738
    assert _count("allcnn", None, CIFAR, 10) == allcnn
    # Byrd-Lipton on CIFAR, 3x3 valid: 3->64, 64->64, 64->128, 128->128, 128->128; then 2048->512->128->2
    convs = conv(3, 64, 3, True) + conv(64, 64, 3, True) + conv(64, 128, 3, True)
    convs += 2 * conv(128, 128, 3, True)
    dense = lin(128 * 4 * 4, 512) + lin(512, 128) + lin(128, 2)
    assert _count("byrd_lipton_cnn", None, CIFAR, 2) == convs + dense == 1_522_754
    # 28x28 ends at 3x3
    convs1 = convs - 2 * 64 * 9
    assert _count("byrd_lipton_cnn", None, FMNIST, 2) == convs1 + dense - 128 * 7 * 512


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    shape = TABULAR if name == "mlp" else SMALL.get(name, (3, 8, 8))
    model = build_model(name, None, shape, 10).train()
    x, y = _input(shape, batch=8), torch.arange(8) % 10
    nn.functional.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


BAD = [
    ("mlp", {"dropout": 1.0}, "model.dropout"),
    ("mlp", {"hidden": [128, 0]}, "model.hidden"),
    ("mlp", {"hidden": "256"}, "model.hidden"),
    ("cnn", {"width": 0}, "model.width"),
    ("cnn", {"width": 3.5}, "model.width"),
    ("cnn", {"batchnorm": "yes"}, "model.batchnorm"),
    ("resnet_small", {"blocks_per_stage": 0}, "model.blocks_per_stage"),
    ("resnet_small", {"dropout": -0.1}, "model.dropout"),
    ("resnet18", {"dropout": "0.1"}, "model.dropout"),
    ("resnet18", {"width": 32}, "model.width"),
    ("byrd_lipton_cnn", {"dropout": True}, "model.dropout"),
    ("allcnn", {"input_dropout": 1.5}, "model.input_dropout"),
    ("cnn", {"widht": 64}, "model.widht"),
]


@pytest.mark.parametrize(("name", "params", "key"), BAD)
def test_bad_params_name_the_key(name, params, key):
    with pytest.raises(ConfigError) as err:
        build_model(name, params, CIFAR, 10)
    assert err.value.key == key
    assert key in str(err.value)


def test_unknown_key_suggests_the_closest_and_lists_the_allowed():
    with pytest.raises(ConfigError, match=r"Did you mean 'width'\?.*dropout, batchnorm, width"):
        build_model("cnn", {"widht": 64}, CIFAR, 10)


def test_unknown_model_names_model_name():
    with pytest.raises(ConfigError, match="resnet18") as err:
        build_model("resnet81", None, CIFAR, 10)
    assert err.value.key == "model.name"


def test_params_accept_the_whole_section_and_dataclass_instances():
    model = build_model("cnn", {"name": "cnn", "width": 8}, DIGITS, 10)
    assert model.features[0].out_channels == 8
    params = MODELS.get("cnn").Params(width=4)
    assert build_model("cnn", params, DIGITS, 10).features[0].out_channels == 4
