"""Per-sample gradient norms, layer by layer (`grad_norms.per_sample_grad_sq_norms`), against a direct per-sample loop
in float64 (every layer kind: linear on vectors and on sequences, convolutions in both the Gram and the materialised
form, groups, strides, "same" padding, BatchNorm, a layer handled by torch.func, a raw parameter, shared weights,
frozen parameters), against torch.func's vmap(grad) on the repository's models, and its side effects (modes, .grad)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlearn.models import build_model
from robustlearn.strategies.sampling import grad_norm_rules
from robustlearn.strategies.sampling.grad_norms import per_sample_grad_sq_norms, per_sample_grad_sq_norms_vmap


def loop_sq_norms(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One backward per sample in eval mode: ‖∇θ l_i‖² in total and per parameter-owning module."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    owners = {name: m for name, m in net.named_modules()
              if any(p.requires_grad for p in m.parameters(recurse=False))}
    total, per = [], {name: [] for name in owners}
    for i in range(len(x)):
        params = [p for p in net.parameters() if p.requires_grad]
        grads = torch.autograd.grad(F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]), params, allow_unused=True)
        by_id = {id(p): g for p, g in zip(params, grads)}
        sq = lambda ps: sum(((by_id[id(p)] if by_id[id(p)] is not None else torch.zeros_like(p)) ** 2).sum()  # noqa
                            for p in ps)
        total.append(sq(params))
        for name, m in owners.items():
            per[name].append(sq([p for p in m.parameters(recurse=False) if p.requires_grad]))
    for m, mode in modes:
        m.training = mode
    return torch.stack(total), {k: torch.stack(v) for k, v in per.items()}


def randomise_batchnorm(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(inplace=True),
                                 nn.Dropout(0.5), nn.Linear(8, 5), nn.Identity(), nn.ReLU(inplace=True),
                                 nn.Linear(5, 3))

    def forward(self, x):
        return self.net(x)


class TinyCNN(nn.Module):
    """Every path: conv (materialised, groups, stride, dilation), conv in the Gram form (many channels, 2x2 output),
    BatchNorm2d/1d, Conv1d with "same" padding, a linear on a sequence (materialised and Gram), LayerNorm (torch.func),
    a linear called twice (shared weights), a frozen bias and a raw parameter of the root module."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.c3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)  # 2x2 output, d_in 72, d_out 16: Gram form
        self.c4 = nn.Conv1d(16, 6, 2, padding="same")
        self.ln = nn.LayerNorm(6)
        self.seq_small = nn.Linear(6, 5)  # T = 4, d 6 -> 5: materialised
        self.seq_wide = nn.Linear(5, 24)  # on T = 2 positions below, d 5 -> 24 ... materialised unless wide
        self.gram = nn.Linear(24, 24)  # T = 2, d 24 -> 24: Gram form
        self.shared = nn.Linear(24, 24)
        self.bn = nn.BatchNorm1d(24)
        self.head = nn.Linear(24, 3)
        self.head.bias.requires_grad_(False)
        self.scale = nn.Parameter(torch.tensor([1.5, 0.5, 1.0]))

    def forward(self, x):
        h = F.relu_(self.b1(self.c1(x)))  # (B, 4, 8, 8)
        h = torch.relu(self.c2(h))  # (B, 8, 4, 4)
        h = torch.relu(self.c3(h))  # (B, 16, 2, 2)
        h = self.c4(h.flatten(2))  # (B, 6, 4)
        h = self.ln(h.transpose(1, 2))  # (B, 4, 6)
        h = torch.tanh(self.seq_small(h))  # (B, 4, 5)
        h = self.seq_wide(h[:, :2])  # (B, 2, 24)
        h = torch.tanh(self.gram(h)).mean(1)  # (B, 24)
        h = self.shared(torch.tanh(self.shared(h)))
        h = F.relu(self.bn(h))
        return self.head(h) * self.scale


def check_against_loop(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    total, per = loop_sq_norms(net, x, y)
    got = per_sample_grad_sq_norms(net, x, y)
    got_per = per_sample_grad_sq_norms(net, x, y, per_layer=True)
    assert got.shape == (len(x),) and got.dtype == torch.float64
    torch.testing.assert_close(got, total, rtol=1e-10, atol=1e-12)
    assert set(got_per) == set(per)
    for name in per:
        torch.testing.assert_close(got_per[name], per[name], rtol=1e-10, atol=1e-12, msg=name)


def test_mlp_matches_a_per_sample_loop_in_float64():
    torch.manual_seed(0)
    net = TinyMLP().double()
    randomise_batchnorm(net)
    x, y = torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 3, (7,))
    check_against_loop(net, x, y)


def test_cnn_with_every_layer_kind_matches_a_per_sample_loop_in_float64():
    torch.manual_seed(0)
    net = TinyCNN().double()
    randomise_batchnorm(net)
    x, y = torch.randn(5, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (5,))
    check_against_loop(net, x, y)
    per = per_sample_grad_sq_norms(net, x, y, per_layer=True)
    assert "" in per and per[""].min() > 0  # the root's raw parameter
    assert all(v.min() > 0 for v in per.values())  # every layer on the loss's path contributes


def test_both_weight_forms_are_chosen_and_agree(monkeypatch):
    g = torch.Generator().manual_seed(0)
    first_args = []
    original = torch.bmm

    def spy(a, b):
        first_args.append(tuple(a.shape))
        return original(a, b)

    monkeypatch.setattr(torch, "bmm", spy)
    for t, d_in, d_out, gram in [(2, 24, 24, True), (9, 3, 4, False)]:  # T²(d_in + d_out) against T d_in d_out
        a = torch.randn(4, t, d_in, generator=g, dtype=torch.float64)
        d = torch.randn(4, t, d_out, generator=g, dtype=torch.float64)
        expected = torch.einsum("ntk,ntj->nkj", d, a).square().sum((1, 2))
        first_args.clear()
        torch.testing.assert_close(grad_norm_rules._weight_sq_norms(a, d), expected)
        assert first_args[0] == ((4, t, d_in) if gram else (4, d_out, t))  # A Aᵀ, or Dᵀ A


def test_vmap_reference_and_layerwise_agree_on_the_repository_models():
    torch.manual_seed(0)
    for name, params, shape in [("cnn", {"width": 4}, (3, 8, 8)), ("resnet_small", {"width": 4, "blocks_per_stage": 1},
                                                                    (3, 8, 8)),
                                ("allcnn", {"batchnorm": True}, (3, 9, 9)), ("mlp", {"hidden": [8, 8]}, (5,))]:
        net = build_model(name, params, shape, 4)
        randomise_batchnorm(net)
        x, y = torch.randn(4, *shape), torch.randint(0, 4, (4,))
        if len(shape) == 3:
            x = x.contiguous(memory_format=torch.channels_last)
        fast = per_sample_grad_sq_norms(net, x, y, per_layer=True)
        ref = per_sample_grad_sq_norms_vmap(net, x, y, per_layer=True)
        assert set(fast) == set(ref), name
        for k in ref:
            torch.testing.assert_close(fast[k], ref[k], rtol=2e-4, atol=1e-6, msg=f"{name}.{k}")


def test_modes_grads_and_running_statistics_are_left_alone():
    torch.manual_seed(0)
    net = TinyMLP()
    net.train()
    x, y = torch.randn(6, 6), torch.randint(0, 3, (6,))
    net(x)  # BatchNorm statistics after one training batch
    stats = net.net[1].running_mean.clone()
    for p in net.parameters():
        p.grad = torch.full_like(p, 7.0)
    with torch.no_grad():  # enables the gradient it needs itself
        first = per_sample_grad_sq_norms(net, x, y)
    assert all(m.training for m in net.modules())
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in net.parameters())
    torch.testing.assert_close(net.net[1].running_mean, stats)
    torch.testing.assert_close(per_sample_grad_sq_norms(net, x, y), first)  # dropout is off: deterministic
    # eval mode: sample i's norm does not depend on the other samples of the batch
    torch.testing.assert_close(per_sample_grad_sq_norms(net, x[:2], y[:2]), first[:2])


def test_batchnorm_without_running_statistics_is_refused():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="couples the samples"):
        per_sample_grad_sq_norms(net, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))


class _Functional(nn.Module):
    """Uses its child's weight without calling the child: unsupported without a parameter of its own."""

    def __init__(self, own: bool):
        super().__init__()
        self.child = nn.Linear(3, 2)
        self.own = nn.Parameter(torch.ones(2)) if own else None

    def forward(self, x):
        out = F.linear(x, self.child.weight, self.child.bias)
        return out * self.own if self.own is not None else out


def test_parameters_used_without_calling_their_module():
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    with pytest.raises(TypeError, match="without calling the module"):
        per_sample_grad_sq_norms(_Functional(own=False).double(), x, y)
    net = _Functional(own=True).double()  # the parent is handled by torch.func, which adopts the child's parameters
    total, _ = loop_sq_norms(net, x, y)
    torch.testing.assert_close(per_sample_grad_sq_norms(net, x, y), total)


@pytest.mark.slow
def test_layerwise_equals_vmap_on_the_cnn_at_batch_128():
    """The benchmark's case (benchmarks/grad_norm_cost.py times it): the repository's `cnn` (width 32, 32x32x3),
    batch 128, channels-last."""
    torch.manual_seed(0)
    net = build_model("cnn", {}, (3, 32, 32), 10).to(memory_format=torch.channels_last)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    torch.testing.assert_close(per_sample_grad_sq_norms(net, x, y), per_sample_grad_sq_norms_vmap(net, x, y),
                               rtol=1e-4, atol=1e-6)
