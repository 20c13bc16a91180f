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
used by the tests and by benchmarks/grad_norm_cost.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from robustlearn.strategies.sampling.grad_norm_rules import RULES, Call, functional_rule, trainable, work_dtype

__all__ = ["per_sample_grad_sq_norms", "per_sample_grad_sq_norms_vmap"]

@contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in net.modules()]
    try:
        net.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


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


def _adopt_uncalled(owners, kinds, calls) -> tuple[dict[str, dict[str, nn.Parameter]], list]:
    """Modules whose forward never ran: their parameters go to the nearest called ancestor handled by `functional_rule`
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
        adopted.setdefault(parent, {}).update({f"{rel}.{k}": p for k, p in trainable(m).items()})
    return adopted, orphans


def per_sample_grad_sq_norms(
    net: nn.Module, x: torch.Tensor, targets: torch.Tensor, per_layer: bool = False,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """‖∇_θ CE(net(x_i), targets_i)‖² for each sample, shape (B,); with `per_layer`, {module name: (B,)} for every
    module owning trainable parameters (the root module is named ""). `targets` are class indices. Runs `net` in
    eval mode (restored after), with gradients enabled even inside `torch.no_grad()`; leaves `.grad` untouched."""
    batch = x.shape[0]
    owners = [(name, m) for name, m in net.named_modules() if trainable(m)]
    if not owners:
        raise ValueError("per_sample_grad_sq_norms: the network has no trainable parameters.")
    kinds = {name: _kind(m) for name, m in owners}
    calls: dict[str, list[Call]] = {name: [] for name, _ in owners}
    extra_inputs: list[torch.Tensor] = []

    def on_forward(name, kind, module, args, kwargs, output):
        c = Call()
        c.args, c.kwargs = tuple(args), dict(kwargs)
        c.versions = tuple(a._version if isinstance(a, torch.Tensor) else None for a in args)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if kind == "linear" and tensors and tensors[0].dim() == 2:
            a = tensors[0].detach()
            c.a_sq = a.to(work_dtype(a)).square().sum(1)
        if not any(t.requires_grad for t in tensors):  # reads no input with a gradient: ask for its own
            extra_inputs.extend(trainable(module).values())
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
            orphan_params = [p for _, m in orphans for p in trainable(m).values()]
            wanted = ([inp] if inp.requires_grad else []) + extra_inputs
            unique, seen = [], set(id(p) for p in orphan_params)
            for t in wanted:
                if id(t) not in seen:
                    seen.add(id(t))
                    unique.append(t)
            if not unique:  # integer inputs and every module reads a tensor with a gradient: ask for all parameters
                unique = [p for _, m in owners for p in trainable(m).values() if id(p) not in seen]
            grads = torch.autograd.grad(loss, unique + orphan_params, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    owner_of = [(n, type(o).__name__) for n, o in orphans for _ in trainable(o)]
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
                out[name] = functional_rule(m, done, name, batch, adopted.get(name)).to(dt)
            else:
                out[name] = RULES[kinds[name]](m, done, name, batch).to(dt)
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
