"""Per-sample gradient norms of the cross-entropy loss, layer by layer, from one forward and one backward pass.

`per_sample_grad_sq_norms(net, x, targets)` returns ‖∇_θ l_i‖² for every sample i of the batch, with
l_i = CE(net(x_i), targets_i) (the per-sample loss, not divided by the batch size) and θ every trainable parameter
of `net`; `per_layer=True` returns the same split by the module that owns the parameters. Used by presampling's
`exact` score (Katharopoulos & Fleuret 2018) and by the Fisher-trace estimate tr F = E‖∇ log p(ŷ|x)‖² (targets ŷ
sampled from the model).

**Eval mode.** Every submodule runs in eval mode during the call (restored after): BatchNorm then normalises with
its running statistics, so sample i's loss depends on sample i alone and its gradient is well defined (in train mode
the batch statistics couple the samples), and dropout is off. A BatchNorm without running statistics is refused.

**How.** A forward hook on every module that owns trainable parameters keeps what the module read (its input, or
for a linear layer on one vector per sample only ‖a_i‖²) and a hook on its output tensor receives the gradient
δ_i of Σ_j l_j with respect to that output, which is sample i's own gradient. The backward pass asks only for the
gradient with respect to the input x (plus the parameters of modules that read no input needing a gradient), so no
weight gradient is formed and `.grad` is never touched. Per layer, from (a, δ) (Goodfellow 2015, arXiv 1510.01799;
Li et al. 2022, "Large language models can be strong differentially private learners", ghost norm; Lee & Kifer 2021):

- `nn.Linear` on one vector per sample: ‖∇W_i‖² = ‖δ_i‖²·‖a_i‖², ‖∇b_i‖² = ‖δ_i‖².
- `nn.Linear` on a sequence (B, T, d_in) and `nn.Conv1d` / `nn.Conv2d` on their unfolded input (T = output
  positions, d_in = C_in/groups · kernel size, per group): ∇W_i = Σ_t δ_it a_itᵀ. Either the Gram form
  ‖∇W_i‖² = Σ_{t,s} ⟨a_it, a_is⟩⟨δ_it, δ_is⟩, cost ~ T²·(d_in + d_out), or the materialised d_out × d_in per-sample
  gradient, cost ~ T·d_in·d_out, whichever is cheaper for that layer's shape; bias ‖Σ_t δ_it‖².
- BatchNorm (eval): ∇γ_i = Σ_spatial δ·x̂, ∇β_i = Σ_spatial δ, x̂ = (x − running mean)/√(running var + eps).
- Any other module with trainable parameters of its own (LayerNorm, GroupNorm, Embedding, Conv3d, transposed
  convolutions, a raw parameter of a custom module): `torch.func.vmap` over the samples of the `torch.func.vjp` of that
  module alone (its own parameters, its recorded input, δ_i as the cotangent).

A module called several times in one forward (shared weights) gets the norm of the sum of its per-call gradients
(calls are concatenated as one longer sequence for linear and convolution layers). Everything is computed in float32
(float64 inputs stay float64). Outputs modified in place afterwards (`ReLU(inplace=True)`) are fine: the output hook
sees the gradient of the value the layer produced. An input modified in place after a layer read it is refused with
a clear error. `per_sample_grad_sq_norms_vmap` is the reference: `torch.func.vmap(grad)` over the whole network,
used by the tests and the timing in docs/methods/importance_sampling.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["per_sample_grad_sq_norms", "per_sample_grad_sq_norms_vmap"]

# Elements of one chunk's per-sample Gram matrices or materialised gradients (about 256 MB in float32).
_CHUNK_ELEMENTS = 1 << 26


@contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in net.modules()]
    try:
        net.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _trainable(m: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in m.named_parameters(recurse=False) if p.requires_grad}


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
        return "linear"
    if isinstance(m, (nn.Conv1d, nn.Conv2d)) and type(m).forward in (nn.Conv1d.forward, nn.Conv2d.forward) \
            and m.padding_mode == "zeros":
        return "conv"
    if isinstance(m, _BatchNorm) and type(m).forward in (nn.BatchNorm1d.forward, nn.BatchNorm2d.forward,
                                                          nn.BatchNorm3d.forward, nn.SyncBatchNorm.forward):
        if m.running_mean is None or m.running_var is None:
            raise ValueError(f"per_sample_grad_sq_norms: {type(m).__name__} without running statistics "
                             "(track_running_stats=False) normalises with the batch's statistics even in eval mode, "
                             "which couples the samples: per-sample gradients are not defined.")
        return "bn"
    return "func"


class _Call:
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


def _work_dtype(t: torch.Tensor) -> torch.dtype:
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


def _linear(m: nn.Linear, calls: list[_Call], name: str, batch: int) -> torch.Tensor:
    params = _trainable(m)
    total = None
    if len(calls) == 1 and calls[0].a_sq is not None:  # one vector per sample
        d = calls[0].grad
        d_sq = d.to(_work_dtype(d)).square().sum(1)
        total = d_sq * calls[0].a_sq if "weight" in params else torch.zeros_like(d_sq)
        return total + d_sq if "bias" in params else total
    a_parts, d_parts = [], []
    for c in calls:
        a = c.tensor_input(name)
        a_parts.append(a.reshape(batch, -1, m.in_features))
        d_parts.append(c.grad.reshape(batch, -1, m.out_features))
    dt = _work_dtype(d_parts[0])
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


def _conv(m: nn.Conv1d | nn.Conv2d, calls: list[_Call], name: str, batch: int) -> torch.Tensor:
    params = _trainable(m)
    g = m.groups
    dt = _work_dtype(calls[0].grad)
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


def _batchnorm(m: _BatchNorm, calls: list[_Call], name: str, batch: int) -> torch.Tensor:
    params = _trainable(m)
    dt = _work_dtype(calls[0].grad)
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


def _functional(m: nn.Module, calls: list[_Call], name: str, batch: int,
                adopted: dict[str, nn.Parameter] | None = None) -> torch.Tensor:
    """vmap over the samples of the vjp of this module alone, with respect to its own parameters and the `adopted`
    ones of submodules it uses without calling them (MultiheadAttention's out_proj), named relative to it."""
    from torch.func import functional_call, vjp, vmap

    params = {k: p.detach() for k, p in {**_trainable(m), **(adopted or {})}.items()}
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
    return sum(g.to(_work_dtype(g)).reshape(batch, -1).square().sum(1) for g in summed.values())


_RULES = {"linear": _linear, "conv": _conv, "bn": _batchnorm}


def _adopt_uncalled(owners, kinds, calls) -> tuple[dict[str, dict[str, nn.Parameter]], list]:
    """Modules whose forward never ran: their parameters go to the nearest called ancestor handled by `_functional`
    (which differentiates them through its own forward); the others are returned as orphans (unused, or used
    outside any supported module: the caller tells the two apart from the backward pass)."""
    called_func = [n for n, _ in owners if kinds[n] == "func" and calls[n]]
    adopted: dict[str, dict[str, nn.Parameter]] = {}
    orphans = []
    for name, m in owners:
        if calls[name]:
            continue
        parents = [p for p in called_func if p == "" or name.startswith(p + ".")]
        if not parents:
            orphans.append((name, m))
            continue
        parent = max(parents, key=len)
        rel = name[len(parent) + 1:] if parent else name
        adopted.setdefault(parent, {}).update({f"{rel}.{k}": p for k, p in _trainable(m).items()})
    return adopted, orphans


def per_sample_grad_sq_norms(
    net: nn.Module, x: torch.Tensor, targets: torch.Tensor, per_layer: bool = False,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """‖∇_θ CE(net(x_i), targets_i)‖² for each sample, shape (B,); with `per_layer`, {module name: (B,)} for every
    module owning trainable parameters (the root module is named ""). `targets` are class indices. Runs `net` in
    eval mode (restored after), with gradients enabled even inside `torch.no_grad()`; leaves `.grad` untouched."""
    batch = x.shape[0]
    owners = [(name, m) for name, m in net.named_modules() if _trainable(m)]
    if not owners:
        raise ValueError("per_sample_grad_sq_norms: the network has no trainable parameters.")
    kinds = {name: _kind(m) for name, m in owners}
    calls: dict[str, list[_Call]] = {name: [] for name, _ in owners}
    extra_inputs: list[torch.Tensor] = []

    def on_forward(name, kind, module, args, kwargs, output):
        c = _Call()
        c.args, c.kwargs = tuple(args), dict(kwargs)
        c.versions = tuple(a._version if isinstance(a, torch.Tensor) else None for a in args)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if kind == "linear" and tensors and tensors[0].dim() == 2:
            a = tensors[0].detach()
            c.a_sq = a.to(_work_dtype(a)).square().sum(1)
        if not any(t.requires_grad for t in tensors):  # reads no input with a gradient: ask for its own
            extra_inputs.extend(_trainable(module).values())
        extra_inputs.extend(t for t in tensors if t.requires_grad and t.is_leaf)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"per_sample_grad_sq_norms: module {name!r} ({type(module).__name__}) returns "
                            f"{type(output).__name__}; only modules returning one tensor are supported.")
        if output.requires_grad:
            output.register_hook(lambda grad: setattr(c, "grad", grad))
        calls[name].append(c)

    handles = []
    with _eval_mode(net):  # also around the per-layer rules: torch.func re-runs modules
        out = _forward_backward(net, x, targets, owners, kinds, calls, extra_inputs, on_forward, handles, batch)
    if per_layer:
        return out
    return torch.stack(list(out.values())).sum(0)


def _forward_backward(net, x, targets, owners, kinds, calls, extra_inputs, on_forward, handles, batch):
    try:
        with torch.enable_grad():
            for name, m in owners:
                handles.append(m.register_forward_hook(
                    lambda mod, args, kwargs, out, _n=name, _k=kinds[name]: on_forward(_n, _k, mod, args, kwargs, out),
                    with_kwargs=True))
            inp = x.detach()
            if inp.is_floating_point():
                inp = inp.requires_grad_(True)
            logits = net(inp)
            loss = F.cross_entropy(logits.float() if logits.dtype != torch.float64 else logits, targets,
                                   reduction="sum")
            adopted, orphans = _adopt_uncalled(owners, kinds, calls)
            orphan_params = [p for _, m in orphans for p in _trainable(m).values()]
            wanted = ([inp] if inp.requires_grad else []) + extra_inputs
            unique, seen = [], set(id(p) for p in orphan_params)
            for t in wanted:
                if id(t) not in seen:
                    seen.add(id(t))
                    unique.append(t)
            if not unique:  # integer inputs and every module reads a tensor with a gradient: ask for all parameters
                unique = [p for _, m in owners for p in _trainable(m).values() if id(p) not in seen]
            grads = torch.autograd.grad(loss, unique + orphan_params, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    owner_of = [(n, type(o).__name__) for n, o in orphans for _ in _trainable(o)]
    for (name, cls), g in zip(owner_of, grads[len(unique):]):
        if g is not None:
            raise TypeError(f"per_sample_grad_sq_norms: the parameters of {name!r} ({cls}) are used without "
                            "calling the module; use per_sample_grad_sq_norms_vmap for this network.")
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, m in owners:
            done = [c for c in calls[name] if c.grad is not None]  # a call off the loss's path adds nothing
            if not done:
                out[name] = torch.zeros(batch, dtype=dt, device=x.device)
            elif kinds[name] == "func":
                out[name] = _functional(m, done, name, batch, adopted.get(name)).to(dt)
            else:
                out[name] = _RULES[kinds[name]](m, done, name, batch).to(dt)
    return out


def per_sample_grad_sq_norms_vmap(
    net: nn.Module, x: torch.Tensor, targets: torch.Tensor, per_layer: bool = False,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The reference: `torch.func.vmap(grad)` of the per-sample loss over the whole network (eval mode), the same
    result as `per_sample_grad_sq_norms`; simple and general, but it forms every per-sample gradient."""
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in net.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in net.named_buffers()}

    def loss_one(p, xi, ti):
        logits = functional_call(net, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits.float() if logits.dtype != torch.float64 else logits, ti.unsqueeze(0))

    with _eval_mode(net), torch.enable_grad():
        grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x.detach(), targets)
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    sq = {k: g.to(dt).reshape(len(x), -1).square().sum(1) for k, g in grads.items()}
    if not per_layer:
        return torch.stack(list(sq.values())).sum(0)
    out: dict[str, torch.Tensor] = {}
    for k, v in sq.items():
        owner = k.rpartition(".")[0]
        out[owner] = out[owner] + v if owner in out else v
    return out
