"""The trace of the Fisher information of the weights during training (a measurement; it does not change training).

Achille, Rovere & Soatto, "Critical Learning Periods in Deep Networks", ICLR 2019 (arXiv:1711.08856).

    tr F(w) = E_x E_{ŷ ~ p_w(·|x)} ‖∇_w log p_w(ŷ|x)‖²

estimated by Monte Carlo:

    tr F ≈ 1/(P S) Σ_{i=1..P} Σ_{s=1..S} ‖∇_w log p_w(ŷ_is | x_i)‖²,   ŷ_is ~ p_w(·|x_i) drawn from the model

over a fixed probe of P = `probe_size` training samples and S = `samples` draws of ŷ per probe sample. ŷ is sampled
from the network's own predictive distribution, not taken from the (noisy) label: that is the Fisher, not the
"empirical Fisher" E_x ‖∇ log p_w(y|x)‖² of the observed labels. ‖∇_w log p(ŷ|x)‖² is the squared norm of the
cross-entropy gradient of the single sample (x, ŷ); the per-sample squared norms come from
`robustlearn.strategies.sampling.grad_norms.per_sample_grad_sq_norms` (one forward and one backward pass over a chunk;
each layer's share from its input and its output gradient, without forming the per-sample gradients), per layer: the
trace splits into one term per module owning parameters (`fisher_trace/<module name>`, e.g. `fisher_trace/net.0`;
parameters of the root module as `root`), and the total (`fisher_trace/total`) is their sum.

Measured at the end of every training epoch (`on_train_epoch_end`, after its validation), or, with `every_n_steps: n`,
after every n-th optimiser step (trainer.global_step divisible by n); the per-epoch values logged are then the mean of
that epoch's measurements, and every measurement is in `history` (checkpointed) and in `fisher_trace.csv` in the
trainer's `default_root_dir`, the run directory under the runner (columns epoch, step, total, seconds, one per
layer). The network is measured in eval mode (dropout off), in float32 without autocast, and every module's mode is
restored after.

Batch-norm statistics (`bn`). In eval mode BatchNorm normalises with its running statistics, which training
accumulates on the *training* batches: during a deficit those are blurred (or flipped, or noise) images, while the
probe is clean. Measured with them, the clean probe passes through a network normalised for other inputs, and the
trace moves with that mismatch rather than with the weights' information. With `bn: clean` (the default) each
measurement is taken on a copy of the network whose BatchNorm statistics are re-estimated on the clean probe (running
statistics reset, then one pass over the probe in batches of `batch_size` with only the BatchNorm layers in train mode,
cumulative average): the authors' later code does the same before it evaluates (`dry_run()` in
mjkleinman/CriticalPeriodMultiView). `bn: running` measures with the training run's own statistics, as this
strategy did before. A network without BatchNorm (All-CNN, the paper's net) is measured as it is either way.
A measurement changes neither the weights, nor the training network's running statistics, nor the global random
state, so a run with it trains exactly as one without it.

The probe: `probe_size` positions of the training split (all of it when smaller) drawn once at the start of the fit
from a generator seeded by the run seed, and checkpointed (`probe`); the inputs are read un-augmented through the
datamodule (`train_tensors()`). The draws of ŷ come from a generator seeded by (run seed, global step), so a resumed
run measures what an uninterrupted one would. With a strategy that adds outputs past the K classes, ŷ is drawn from
the softmax over every output of the network (the distribution the gradient function differentiates).

Defaults: probe_size 512, samples 1, every epoch, bn clean. The paper plots the trace per epoch (it rises fast in the
first epochs, then decreases, and a deficit changes how the information is distributed over the layers); it states no
probe size, so 512 samples with one draw each is a choice of this repository (raise `probe_size` or `samples` for a
smoother curve: the Monte Carlo error falls as 1/√(P·S)). `batch_size` only bounds memory (one chunk's activations
and output gradients are held at once).

Cost (`fisher_trace/seconds`, wall clock of one measurement, with the device synchronised before and after): one
forward pass over the probe in chunks to draw ŷ, then one forward and one backward pass over the P·S (input, ŷ) pairs
with the per-layer norm computation, so roughly the price of P·S/B training steps at batch size B, and nothing in the
other steps. It reads the device once per measurement (the values go to the host for logging). No oracle
information is read.

When to use it: to follow the rise and fall of tr F during training (the paper's memorisation and consolidation
phases), per layer, beside a deficit or a noisy-label method, to see how they change where the information goes.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_whole
from robustlearn.strategies.sampling.grad_norms import per_sample_grad_sq_norms

PROBE_SALT = 7401  # streams of the probe and of the ŷ draws, apart from every other stream of the run
LABEL_SALT = 7402

GradSqNorms = Callable[..., dict[str, torch.Tensor]]


@contextlib.contextmanager
def measuring(net: nn.Module) -> Iterator[None]:
    """Eval mode (every module's mode restored after), gradients on, no autocast."""
    modes = [(m, m.training) for m in net.modules()]
    device_type = next(net.parameters()).device.type
    try:
        net.eval()
        with torch.enable_grad(), torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def with_clean_bn_stats(net: nn.Module, x: torch.Tensor, batch_size: int = 128) -> nn.Module:
    """A copy of `net` whose BatchNorm running statistics are re-estimated on the inputs `x` (reset, then a cumulative
    average over batches of `batch_size`, only the BatchNorm layers in train mode, so dropout draws nothing); `net`
    itself unchanged. A network without BatchNorm statistics is returned as it is."""
    bn = nn.modules.batchnorm._BatchNorm
    if not any(isinstance(m, bn) and m.track_running_stats for m in net.modules()):
        return net
    twin = copy.deepcopy(net)
    twin.eval()
    for m in twin.modules():
        if isinstance(m, bn) and m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
    device_type = next(twin.parameters()).device.type
    with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):
        for lo in range(0, len(x), batch_size):
            twin(x[lo : lo + batch_size])
    twin.eval()
    return twin


@dataclass
class FisherEstimate:
    total: float  # the trace estimate, summed over the layers
    layers: dict[str, float]  # per layer, in the order the gradient function names them
    labels: torch.Tensor  # the ŷ drawn, (P·S,), probe sample i's S draws at positions i·S .. i·S + S - 1


def estimate_fisher_trace(net: nn.Module, x: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None,
                          batch_size: int = 128, grad_sq_norms: GradSqNorms | None = None) -> FisherEstimate:
    """Monte Carlo tr F of `net` on the inputs `x` (P, ...): S = `samples` draws ŷ ~ softmax(net(x_i)) per input,
    mean over the P·S of ‖∇_w CE(net(x_i), ŷ)‖², per layer and total. Eval mode, float32 (or the network's dtype)."""
    fn = grad_sq_norms or per_sample_grad_sq_norms
    sums: dict[str, torch.Tensor] = {}
    labels = []
    with measuring(net):
        for lo in range(0, len(x), batch_size):
            xc = x[lo : lo + batch_size]
            with torch.no_grad():
                p = torch.softmax(net(xc).double(), dim=1)
            y_hat = torch.multinomial(p, samples, replacement=True, generator=generator).reshape(-1)
            norms = fn(net, xc.repeat_interleave(samples, dim=0), y_hat, per_layer=True)
            for module_name, value in norms.items():
                name = module_name or "root"  # parameters of the network's own (root) module
                s = value.detach().double().sum()
                sums[name] = sums[name] + s if name in sums else s
            labels.append(y_hat)
    n = len(x) * samples
    names = list(sums)
    values = (torch.stack([sums[k] for k in names]) / n).tolist()  # the one read of the device
    layers = dict(zip(names, values))
    return FisherEstimate(total=sum(values), layers=layers, labels=torch.cat(labels))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@STRATEGIES.register("fisher_trace")
class FisherTrace(Strategy):
    """Achille et al. 2019: tr F = E_x E_{ŷ~p_w} ‖∇_w log p_w(ŷ|x)‖² on a fixed probe, per layer, every epoch."""

    needs = ("datamodule",)

    state_attrs = ("probe", "history")

    @dataclass
    class Params:
        probe_size: int = 512  # training samples in the fixed probe, >= 1 (the whole split where it is smaller)
        samples: int = 1  # draws of ŷ from the model per probe sample, >= 1
        every_n_steps: int | None = None  # null: once after every epoch; n: after every n-th optimiser step
        batch_size: int = 128  # probe samples per chunk (each with its `samples` draws; memory only), >= 1
        bn: str = "clean"  # clean: BatchNorm statistics re-estimated on the clean probe; running: the run's own

        def __post_init__(self):
            if self.bn not in ("clean", "running"):
                raise ConfigError(f"fisher_trace: bn = {self.bn!r} must be 'clean' (BatchNorm statistics re-estimated "
                                  "on the clean probe before measuring) or 'running' (the training run's own).", "bn")
            for key in ("probe_size", "samples", "batch_size"):
                value = getattr(self, key)
                if not (is_whole(value) and value >= 1):
                    raise ConfigError(f"fisher_trace: {key} = {value!r} must be an integer >= 1.", key)
            n = self.every_n_steps
            if n is not None and not (is_whole(n) and n >= 1):
                raise ConfigError(f"fisher_trace: every_n_steps = {n!r} must be null (every epoch) or an integer >= 1.",
                                  "every_n_steps")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.probe: torch.Tensor | None = None  # positions in the training split, on the host
        self.history: list[dict] = []  # every measurement: epoch, step, total, seconds, per layer
        self.seed = 0
        self._probe_x: torch.Tensor | None = None
        self._last_step: int | None = None

    # ---- set-up -------------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        cfg = getattr(pl_module, "cfg", None)
        self.seed = int(cfg.seed if cfg is not None and "seed" in cfg else torch.initial_seed())

    def choose_probe(self, train_size: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, 0, salt=PROBE_SALT))
        return torch.randperm(train_size, generator=g)[: self.params.probe_size]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x = self.datamodule(trainer).train_tensors()["x"]
        if self.probe is None:  # a resumed run has it from the checkpoint
            self.probe = self.choose_probe(len(x))
        self._probe_x = x[self.probe.to(x.device)].to(pl_module.device)
        self._last_step = None

    # ---- measuring ----------------------------------------------------------------------------------------------
    def network(self, pl_module: pl.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", pl_module)
        return getattr(net, "_orig_mod", net)  # a compiled network's own module (its parameter names)

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = self.network(pl_module)
        device = self._probe_x.device
        g = torch.Generator(device=device).manual_seed(epoch_seed(self.seed, trainer.global_step, salt=LABEL_SALT))
        _synchronize(device)
        started = time.perf_counter()
        if self.params.bn == "clean":
            net = with_clean_bn_stats(net, self._probe_x, self.params.batch_size)
        est = estimate_fisher_trace(net, self._probe_x, self.params.samples, g, self.params.batch_size)
        _synchronize(device)
        seconds = time.perf_counter() - started
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, "total": est.total,
                             "seconds": seconds, **est.layers})
        self.log_metric(pl_module, "total", est.total, batch_size=1)
        for name, value in est.layers.items():
            self.log_metric(pl_module, name, value, batch_size=1)
        self.log_metric(pl_module, "seconds", seconds, batch_size=1)
        self._write_history(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.params.every_n_steps
        step = trainer.global_step
        if n is None or step % n != 0 or step == self._last_step:  # host integers only
            return
        self._last_step = step
        self.measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.params.every_n_steps is None:
            self.measure(trainer, pl_module)

    def _write_history(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        path = Path(trainer.default_root_dir) / "fisher_trace.csv"
        columns = list(dict.fromkeys(k for row in self.history for k in row))
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)
