"""The per-layer rules of `per_sample_grad_sq_norms` (grad_norms.py, whose docstring gives the formulas and papers):
from what a module read (a) and the gradient of its output (δ), the squared norm of each sample's gradient with
respect to the module's own trainable parameters. Linear and convolution layers by the Gram ("ghost norm") or the
materialised per-sample gradient, whichever is cheaper for the layer's shape; BatchNorm in eval mode in closed form;
any other module by `torch.func.vmap` of its own vjp.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# Elements of one chunk's per-sample Gram matrices or materialised gradients (about 256 MB in float32).
_CHUNK_ELEMENTS = 1 << 26


def trainable(m: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in m.named_parameters(recurse=False) if p.requires_grad}


class Call:
    """What one module call left: its input (or ‖a‖² for a linear layer on vectors), the gradient of its output."""

    __slots__ = ("args", "kwargs", "versions", "a_sq", "grad")

    def __init__(self):
        self.args: tuple = ()
        self.kwargs: dict = {}
        self.versions: tuple = ()
        self.a_sq: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None

    def tensor_input(self, name: str) -> torch.Tensor:
        x = self.args[0]
        if x._version != self.versions[0]:
            raise RuntimeError(f"per_sample_grad_sq_norms: the input of {name!r} was modified in place after the "
                               "layer read it; per-sample gradients need that input as the layer saw it.")
        return x.detach()


def work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _chunks(n: int, per_sample: int) -> Iterator[slice]:
    size = max(1, _CHUNK_ELEMENTS // max(1, per_sample))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _weight_sq_norms(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """‖Σ_t d_it a_itᵀ‖_F² per row i, for a (n, T, d_in) and d (n, T, d_out): Gram or materialised, the cheaper."""
    n, t, d_in = a.shape
    d_out = d.shape[2]
    out = a.new_empty(n)
    if t * t * (d_in + d_out) <= t * d_in * d_out:  # ghost norm: two T x T Gram matrices per sample
        for s in _chunks(n, t * t):
            out[s] = (torch.bmm(a[s], a[s].transpose(1, 2)) * torch.bmm(d[s], d[s].transpose(1, 2))).sum((1, 2))
    else:  # the per-sample gradient itself
        for s in _chunks(n, d_in * d_out):
            out[s] = torch.bmm(d[s].transpose(1, 2), a[s]).square().sum((1, 2))
    return out


def _linear(m: nn.Linear, calls: list[Call], name: str, batch: int) -> torch.Tensor:
    params = trainable(m)
    total = None
    if len(calls) == 1 and calls[0].a_sq is not None:  # one vector per sample
        d = calls[0].grad
        d_sq = d.to(work_dtype(d)).square().sum(1)
        total = d_sq * calls[0].a_sq if "weight" in params else torch.zeros_like(d_sq)
        return total + d_sq if "bias" in params else total
    a_parts, d_parts = [], []
    for c in calls:
        a = c.tensor_input(name)
        a_parts.append(a.reshape(batch, -1, m.in_features))
        d_parts.append(c.grad.reshape(batch, -1, m.out_features))
    dt = work_dtype(d_parts[0])
    a = torch.cat(a_parts, 1).to(dt)
    d = torch.cat(d_parts, 1).to(dt)
    total = _weight_sq_norms(a, d) if "weight" in params else d.new_zeros(batch)
    if "bias" in params:
        total = total + d.sum(1).square().sum(1)
    return total


def _conv_input(m: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The input with a string padding ("same", "valid") applied, and the numeric padding left to apply."""
    if not isinstance(m.padding, str):
        return x, tuple(m.padding)
    if m.padding == "same":
        pads = []
        for k, d in zip(reversed(m.kernel_size), reversed(m.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
    return x, (0,) * len(m.kernel_size)


def _unfold(m: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The convolution's input patches, (B, C_in · kernel size, output positions)."""
    x, padding = _conv_input(m, x)
    if isinstance(m, nn.Conv1d):  # as a 2-d convolution of height 1
        x, lift = x.unsqueeze(2), (lambda v, first=1: (first, *v))
    else:
        lift = (lambda v, first=1: tuple(v))
    return F.unfold(x, lift(m.kernel_size), dilation=lift(m.dilation), padding=lift(padding, 0),
                    stride=lift(m.stride))


def _conv_weight_grads(m: nn.Conv1d | nn.Conv2d, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The per-sample weight gradients of rows x, d, (n, C_out · C_in/groups · kernel size), as the weight gradient
    of one convolution with the samples as extra groups (the library's convolution backward, not im2col)."""
    n = x.shape[0]
    x, padding = _conv_input(m, x)
    x = x.contiguous().reshape(1, n * x.shape[1], *x.shape[2:])
    d = d.contiguous().reshape(1, n * d.shape[1], *d.shape[2:])
    size = (n * m.out_channels, m.in_channels // m.groups, *m.kernel_size)
    weight_grad = torch.nn.grad.conv1d_weight if isinstance(m, nn.Conv1d) else torch.nn.grad.conv2d_weight
    g = weight_grad(x, size, d, stride=m.stride, padding=padding, dilation=m.dilation, groups=n * m.groups)
    return g.reshape(n, -1)


def _conv(m: nn.Conv1d | nn.Conv2d, calls: list[Call], name: str, batch: int) -> torch.Tensor:
    params = trainable(m)
    g = m.groups
    dt = work_dtype(calls[0].grad)
    grads = [c.grad.to(dt) for c in calls]
    total = grads[0].new_zeros(batch)
    if "bias" in params:
        total = total + sum(d.reshape(batch, m.out_channels, -1).sum(2) for d in grads).square().sum(1)
    if "weight" not in params:
        return total
    inputs = [c.tensor_input(name).to(dt) for c in calls]
    t = sum(d[0, 0].numel() for d in grads)  # output positions, over all calls
    d_in = m.in_channels // g * m.weight[0, 0].numel()
    d_out = m.out_channels // g
    if t * t * (d_in + d_out) <= t * d_in * d_out:  # ghost norm on the unfolded input
        a = torch.cat([_unfold(m, x).reshape(batch * g, d_in, -1) for x in inputs], 2)
        d = torch.cat([d.reshape(batch * g, d_out, -1) for d in grads], 2)
        return total + _weight_sq_norms(a.transpose(1, 2), d.transpose(1, 2)).reshape(batch, g).sum(1)
    norms = []
    for s in _chunks(batch, d_in * d_out * g):
        per_sample = sum(_conv_weight_grads(m, x[s], d[s]) for x, d in zip(inputs, grads))
        norms.append(per_sample.square().sum(1))
    return total + torch.cat(norms)


def _batchnorm(m: _BatchNorm, calls: list[Call], name: str, batch: int) -> torch.Tensor:
    params = trainable(m)
    dt = work_dtype(calls[0].grad)
    g_gamma = g_beta = None
    for c in calls:
        x = c.tensor_input(name).to(dt)
        d = c.grad.to(dt)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x_hat = (x - m.running_mean.to(dt).reshape(shape)) / torch.sqrt(m.running_var.to(dt).reshape(shape) + m.eps)
        dims = tuple(range(2, x.dim()))
        gamma = (d * x_hat).sum(dims) if dims else d * x_hat
        beta = d.sum(dims) if dims else d
        g_gamma = gamma if g_gamma is None else g_gamma + gamma
        g_beta = beta if g_beta is None else g_beta + beta
    total = g_gamma.new_zeros(batch)
    if "weight" in params:
        total = total + g_gamma.square().sum(1)
    if "bias" in params:
        total = total + g_beta.square().sum(1)
    return total


def functional_rule(m: nn.Module, calls: list[Call], name: str, batch: int,
                adopted: dict[str, nn.Parameter] | None = None) -> torch.Tensor:
    """vmap over the samples of the vjp of this module alone, with respect to its own parameters and the `adopted`
    ones of submodules it uses without calling them (MultiheadAttention's out_proj), named relative to it."""
    from torch.func import functional_call, vjp, vmap

    params = {k: p.detach() for k, p in {**trainable(m), **(adopted or {})}.items()}
    summed: dict[str, torch.Tensor] | None = None
    for c in calls:
        for i, a in enumerate(c.args):
            if isinstance(a, torch.Tensor) and a._version != c.versions[i]:
                raise RuntimeError(f"per_sample_grad_sq_norms: an input of {name!r} was modified in place after "
                                   "the layer read it.")
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in c.args)
        dims = tuple(0 if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == batch else None
                     for a in args)
        kwargs = c.kwargs

        def one(p, delta, *sample_args, _dims=dims, _kwargs=kwargs):
            full = tuple(a.unsqueeze(0) if d == 0 else a for a, d in zip(sample_args, _dims))
            _, pull = vjp(lambda q: functional_call(m, q, full, _kwargs), p)
            return pull(delta.unsqueeze(0))[0]

        grads = vmap(one, in_dims=(None, 0, *dims))(params, c.grad.detach(), *args)
        summed = grads if summed is None else {k: summed[k] + grads[k] for k in grads}
    return sum(g.to(work_dtype(g)).reshape(batch, -1).square().sum(1) for g in summed.values())


RULES = {"linear": _linear, "conv": _conv, "bn": _batchnorm}
