"""Presampling: importance sampling of the training batch by an upper bound of the gradient norm.

Katharopoulos & Fleuret, "Not All Samples Are Created Equal: Deep Learning with Importance Sampling", ICML 2018,
arXiv:1803.00942; official code github.com/idiap/importance-sampling (`ImportanceTraining`, `ModelSampler`,
`VarianceReductionCondition`, `BiasedReweightingPolicy(k=1)`).

Every step draws B = ⌊presample · b⌋ candidates uniformly with replacement (`dm.draw(B)`: augmented, on the device,
from the datamodule's resume-exact stream), scores them without gradient with BatchNorm and dropout in eval mode
(`scoring`), and draws the b samples to train on WITH replacement from

    p_i = (s_i + smooth) / Σ_j (s_j + smooth),        weight w_i = 1 / (B p_i),

so that the step's loss Σ_j w_j l_j / b (the module's reduction, `strategy_step`) is an unbiased estimate of the mean
loss over the B candidates, itself an unbiased estimate of the mean over the training set. Scores (`score`):

- `loss`: the per-sample cross-entropy.
- `upper_bound` (the paper's, official `score="gnorm"`): ‖softmax(z) − onehot(y)‖₂, the norm of the gradient of the
  cross-entropy with respect to the logits z, which bounds the full gradient norm up to a constant (paper, eq. 19-20).
- `last_layer`: the exact gradient norm of the last linear layer, ‖softmax(z) − onehot(y)‖₂ · √(‖h‖² + 1), h the
  layer's input (read by a forward hook on the network's last `nn.Linear`; without bias √‖h‖²).
- `exact`: the norm of the full per-sample gradient (`grad_norms.per_sample_grad_sq_norms`, layer by layer: one
  backward pass and the per-layer terms more than `upper_bound`; the official `full_gnorm`).

Scores use the first K logits (the classes) and cross-entropy, whatever loss trains the network: the weights keep the
estimate unbiased for any score; a loss other than cross-entropy only makes the scores less than optimal.

**When sampling is on.** τ = (1 − ‖g − u‖²/‖g‖²)^(−1/2) of the normalised scores g (sum 1) against the uniform u
(`tau.py`) estimates the variance reduction; the smoothed τ̄ ← a_τ τ̄ + (1 − a_τ) τ starts at 0 and sampling is on
while τ̄ exceeds τ_th = (B + 3b)/(3b) (paper eq. 29; 2 for presample 3), B = ⌊presample · b⌋ the number of candidates
actually drawn, as the official `ImportanceTraining.sampler` computes it (`B = int(presample * batch_size)`, then
`tau_th = (B + 3*b) / (3*b)`); (presample + 3)/3 differs from it when presample · b is not whole (presample 2.5,
b 5: B = 12 and τ_th = 1.8, not 1.83). b is `data.batch_size` for `switch: epoch` (the official code's fixed batch
size); with `switch: step` each step uses its own b and B, the same except for an epoch's last, smaller batch (the
official sampler has none). An off step trains on the loader's own batch with weights 1, exactly as plain training.
When the switch is read (`switch`):

- `epoch` (default): on the host, once at the start of every epoch (one device read per epoch, none in the steps);
  the decision holds for the epoch. An off epoch costs what plain training costs, as in the paper's Algorithm 1: no
  candidates are drawn, and τ comes from the trained batch's own scores — for `loss` and `upper_bound` from the
  training forward's logits (no extra pass, the official code's way), for `last_layer` and `exact` from scoring the
  trained batch (b forwards, not B). An on epoch presamples every step, τ from its B candidates. The decision lags
  the paper's per-step one by up to an epoch.
- `step`: on the device at every step, from τ̄ as it stood before the step, with no host read: both batches are
  built every step and one is chosen by `torch.where`, so every step pays the B candidates' scoring, on or off, and
  τ always comes from the candidates (the same estimand, sqrt(mean s²)/mean s, from B rather than b samples).

Under DDP the scores τ is computed from are gathered from every rank, so every rank keeps the same τ̄ and takes the
same decision (tested with two CPU processes).

Defaults, from the official code: `presample` 3 (`ImportanceTraining(presample=3.0)`, `--presample` of its
examples); `tau_th` null = (B + 3b)/(3b) (its default, eq. 29); `a_tau` 0.9 (the condition's momentum); `smooth` 0
(`ImportanceTraining` smooths nothing; its biased variants take an additive `smooth`, default 0, e.g. 0.05-0.5 when
the scores are noisy); `score` `upper_bound` (its default `gnorm`).

Logged per epoch: `presample/tau` (the epoch mean of τ̄ after each step) and `presample/active` (the share of steps
that sampled). `switch` is this repository's choice (the official code decides per step on the host, a device read
per step).

**Epochs, batch size, DDP.** The module's batch size stays b and an epoch has the loader's usual number of steps
(N/b), as in the official code (`steps_per_epoch = N/b`); the last, smaller batch of an epoch presamples from
⌊presample · b_last⌋ candidates. Under DDP every rank draws from one common stream (seeded by seed, epoch and step,
not the rank): world·B candidates, of which each rank scores its own B; the scores are all-gathered, every rank draws
the same world·b picks from them and trains on its own b, weighted 1/(world·B·p), so the gradient averaged over the
ranks is an unbiased estimate over all world·B candidates (tested with two CPU processes).

**Cost.** With `switch: epoch`, nothing in an off epoch beyond plain training (for `last_layer` and `exact`, b
eval-mode scoring passes per step); in an on epoch, and on every step with `switch: step`, B eval-mode forward
passes per step on top of the training step: with presample 3 about one extra training step's time (a forward is
about a third of a forward-backward); `last_layer` the same; `exact` a backward pass and the per-layer terms more.
With `trainer.compile` the `loss` and `upper_bound` scores run the compiled network; `last_layer` and `exact` run the
eager one (they need hooks).

**Bias.** None from the sampling: the weights make the estimate unbiased (tested), with replacement as the weights
assume. Eval-mode scores differ from the train-mode ones BatchNorm would give; the paper's code recommends layer
normalisation instead. Reads no oracle information.

When to use it: late in training, when most samples are learned and a few carry most of the gradient (τ̄ rises);
on noisy labels it concentrates on high-loss samples, which are often the mislabelled ones — the unbiased weights
keep their total weight, but the variance of the gradient estimate is spent there.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number
from robustlearn.strategies.sampling.grad_norms import per_sample_grad_sq_norms
from robustlearn.strategies.sampling.tau import smoothed, threshold, variance_reduction
from robustlearn.strategies.scoring import scoring

SCORES = ("loss", "upper_bound", "last_layer", "exact")
SWITCHES = ("epoch", "step")
_SALT = 7103  # the sampling generator's stream, apart from the datamodule's draw stream
_SEED_MASK = (1 << 63) - 1


def candidate_count(presample: float, b: int) -> int:
    """B = ⌊presample · b⌋ (at least 1), the candidates a step training b samples draws (official:
    `int(presample * batch_size)`)."""
    return max(1, int(presample * b))


def sampling_distribution(scores: torch.Tensor, smooth: float) -> torch.Tensor:
    """p ∝ scores + smooth (B,); non-finite or negative scores count as 0; uniform where every smoothed score is 0.
    No host sync."""
    s = scores.float()
    s = torch.where(torch.isfinite(s), s, torch.zeros_like(s)).clamp_min(0.0) + smooth
    total = s.sum()
    return torch.where(total > 0, s / total.clamp_min(torch.finfo(s.dtype).tiny), torch.full_like(s, 1.0 / len(s)))


def importance_sample(scores: torch.Tensor, b: int, smooth: float, generator: torch.Generator | None = None):
    """Draw b of the B scored candidates with replacement, p ∝ scores + smooth, each weighted 1 / (B p).

    Returns (picked positions (b,), weights (b,), p (B,)). No host sync."""
    p = sampling_distribution(scores, smooth)
    # torch.multinomial reads the device for one draw (its without-replacement path); two with replacement do not,
    # and the first of two independent draws is a draw
    pick = torch.multinomial(p, max(b, 2), replacement=True, generator=generator)[:b]
    return pick, 1.0 / (len(p) * p[pick]), p


def logit_scores(logits: torch.Tensor, y: torch.Tensor, kind: str, k: int | None = None) -> torch.Tensor:
    """The `loss` or `upper_bound` score of each sample from its first `k` logits (the classes; None: all), float32."""
    z = logits.float()[:, :k]
    if kind == "loss":
        return F.cross_entropy(z, y, reduction="none")
    p = torch.softmax(z, dim=1)
    return p.scatter_add(1, y[:, None], torch.full_like(p[:, :1], -1.0)).norm(dim=1)  # ‖p − onehot(y)‖


def last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The network's last registered `nn.Linear` (its name and the layer); a ConfigError where it has none."""
    found = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ConfigError(f"presample: score last_layer needs a network whose last layer is an nn.Linear; "
                          f"{type(net).__name__} has no nn.Linear. Use score upper_bound or exact.", "score")
    return found[-1]


def eager_network(module: nn.Module) -> nn.Module:
    """The module's network without torch.compile's wrapper (hooks need the eager modules)."""
    net = getattr(module, "net", module)
    return getattr(net, "_orig_mod", net)


@STRATEGIES.register("presample")
class Presample(Strategy):
    """Katharopoulos & Fleuret (2018): presample B = presample·b, resample b ∝ score, weights 1/(B p), on while τ̄ >
    τ_th."""

    needs = ("datamodule",)

    replaces_batch = True
    state_attrs = ("tau_bar",)

    @dataclass
    class Params:
        score: str = "upper_bound"  # loss | upper_bound | last_layer | exact (official: gnorm = upper_bound)
        presample: float = 3.0  # B = presample · b candidates per step, > 1 (official default 3)
        smooth: float = 0.0  # added to every score before normalising, >= 0 (official ImportanceTraining: none)
        tau_th: float | None = None  # sampling on while τ̄ > tau_th, >= 0; null: (B + 3b)/(3b) (paper eq. 29)
        a_tau: float = 0.9  # momentum of τ̄, 0 <= a_tau < 1 (official: 0.9)
        switch: str = "epoch"  # epoch: τ̄ > τ_th read at each epoch's start, off epochs cost nothing; step: per step

        def __post_init__(self):
            if self.switch not in SWITCHES:
                raise ConfigError(f"presample: switch = {self.switch!r} is not one of {', '.join(SWITCHES)}.",
                                  "switch")
            if self.score not in SCORES:
                raise ConfigError(f"presample: score = {self.score!r} is not one of {', '.join(SCORES)}.", "score")
            if not (is_number(self.presample) and self.presample > 1):
                raise ConfigError(f"presample: presample = {self.presample!r} must be a number > 1 (B = presample · "
                                  "b candidates per step).", "presample")
            if not (is_number(self.smooth) and self.smooth >= 0):
                raise ConfigError(f"presample: smooth = {self.smooth!r} must be a number >= 0.", "smooth")
            if self.tau_th is not None and not (is_number(self.tau_th) and self.tau_th >= 0):
                raise ConfigError(f"presample: tau_th = {self.tau_th!r} must be null or a number >= 0.", "tau_th")
            if not (is_number(self.a_tau) and 0 <= self.a_tau < 1):
                raise ConfigError(f"presample: a_tau = {self.a_tau!r} must be a number >= 0 and < 1.", "a_tau")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.tau_bar = torch.zeros(())  # τ̄, on the training device from the first step; checkpointed
        self.dm = None
        self._step = 0  # step within the epoch, for the sampling generator's seed
        self._gens: dict[int, torch.Generator] = {}  # by salt: the sampling stream and, under DDP, the common ones
        self._on = False  # switch epoch: whether this epoch presamples (τ̄ > τ_th at its start)

    def tau_threshold(self, b: int) -> float:
        """τ_th for steps training b samples: the configured one, or (B + 3b)/(3b) with B = ⌊presample · b⌋ the
        candidates drawn (eq. 29 as the official code computes it)."""
        p = self.params
        return float(p.tau_th) if p.tau_th is not None else threshold(candidate_count(p.presample, b), b)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.dm = self.datamodule(trainer)
        if self.params.score == "last_layer":
            last_linear(eager_network(pl_module))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step = 0
        if self.params.switch == "epoch":  # one host read per epoch, outside the steps
            self._on = bool(self.tau_bar.detach().cpu() > self.tau_threshold(self.dm.data_cfg.batch_size))

    # ---- scores --------------------------------------------------------------------------------------------
    def scores(self, x: torch.Tensor, y: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """The candidates' scores (B,), float32, no gradient, eval mode."""
        kind = self.params.score
        k = getattr(module, "num_classes", None)
        if kind == "exact":
            with scoring(module):  # per_sample_grad_sq_norms enables the gradient it needs itself
                return per_sample_grad_sq_norms(eager_network(module), x, y).float().sqrt()
        with scoring(module):
            if kind == "last_layer":
                net = eager_network(module)
                name, layer = last_linear(net)
                seen = {}
                handle = layer.register_forward_hook(lambda m, args, out: seen.update(h=args[0], out=out))
                try:
                    logits = net(x)
                finally:
                    handle.remove()
                if seen.get("out") is not logits or seen["h"].dim() != 2:
                    raise RuntimeError(f"presample: score last_layer needs the network's output to be its last "
                                       f"nn.Linear's ({name!r}) output, on one vector per sample; this network "
                                       "transforms it further or applies it to sequences. Use score upper_bound or "
                                       "exact.")
            else:
                logits = module(x)
            if kind in ("loss", "upper_bound"):
                return logit_scores(logits, y, kind, k)
            norm = logit_scores(logits, y, "upper_bound", k)
            h_sq = seen["h"].float().square().sum(1)
            bias = 1.0 if layer.bias is not None and layer.bias.requires_grad else 0.0
            return norm * torch.sqrt(h_sq + bias)

    # ---- the step --------------------------------------------------------------------------------------------
    def _generator(self, module: pl.LightningModule, device: torch.device, salt: int = 0,
                   common: bool = False) -> torch.Generator:
        """A generator re-seeded from (seed, epoch, step, salt) at every step, and the rank unless `common` (the
        stream every rank shares under DDP): resume-exact."""
        trainer = module.trainer
        seed = self.dm.cfg.seed if self.dm is not None else 0
        rank = 0 if common else getattr(trainer, "global_rank", 0)
        base = epoch_seed(seed, trainer.current_epoch, salt=_SALT + 1000 * rank + 17 * salt)
        gen = self._gens.get(salt)
        if gen is None or gen.device != device:
            gen = self._gens[salt] = torch.Generator(device=device)
        gen.manual_seed(epoch_seed(base & _SEED_MASK, self._step, salt=_SALT))
        return gen

    def _draw_and_score(self, module: pl.LightningModule, b: int, n: int):
        """(candidates, their scores, picked positions, weights, p). One rank: its own candidates. Under DDP: one common
        stream of world·n candidates; each rank scores its share, the scores are all-gathered, every rank draws the
        same world·b picks and trains on its own b of them, weighted 1/(world·n·p) (the gradient average over the
        ranks then estimates the mean over all world·n candidates without bias)."""
        trainer = module.trainer
        world, rank = getattr(trainer, "world_size", 1), getattr(trainer, "global_rank", 0)
        if world == 1:
            big = self.dm.draw(n)
            s = self.scores(big["x"], big["y"], module)
            pick, w, p = importance_sample(s, b, self.params.smooth, self._generator(module, big["y"].device))
            return big, s, pick, w, p
        device = module.device
        big = self.dm.draw(world * n, generator=self._generator(module, device, salt=1, common=True))
        mine = slice(rank * n, (rank + 1) * n)
        s_mine = self.scores(big["x"][mine], big["y"][mine], module)
        s = trainer.strategy.all_gather(s_mine).reshape(world * n)
        pick, w, p = importance_sample(s, world * b, self.params.smooth,
                                       self._generator(module, device, salt=2, common=True))
        own = slice(rank * b, (rank + 1) * b)
        return big, s, pick[own], w[own], p

    def _update_tau(self, p: torch.Tensor, module: pl.LightningModule) -> torch.Tensor:
        """τ̄ ← a τ̄ + (1 − a) τ(p); returns τ̄ as it stood before (on p's device)."""
        before = self.tau_bar.to(p.device)
        self.tau_bar = smoothed(before, variance_reduction(p), self.params.a_tau)
        self.log_step(module, "tau", self.tau_bar, 1)
        return before

    def _off_epoch_scores(self, s: torch.Tensor, module: pl.LightningModule) -> None:
        """An off epoch's step: τ from the trained batch's own scores (all ranks' under DDP, so that every rank
        keeps the same τ̄ and takes the same decision)."""
        trainer = module.trainer
        if getattr(trainer, "world_size", 1) > 1:
            s = trainer.strategy.all_gather(s).reshape(-1)
        self._update_tau(sampling_distribution(s, self.params.smooth), module)

    def on_batch(self, batch: dict, module: pl.LightningModule) -> dict:
        epoch_switch = self.params.switch == "epoch"
        if epoch_switch and not self._on:  # plain training; τ from this batch's scores (here or in `weights`)
            self._step += 1
            self.log_step(module, "active", torch.zeros((), device=batch["y"].device), 1)
            if self.params.score in ("last_layer", "exact"):
                self._off_epoch_scores(self.scores(batch["x"], batch["y"], module), module)
            return batch
        b = len(batch["y"])
        n = candidate_count(self.params.presample, b)
        big, s, pick, w, p = self._draw_and_score(module, b, n)
        device = big["y"].device
        self._step += 1
        before = self._update_tau(p, module)  # τ of the sampling distribution: the smoothed, sanitised scores
        if epoch_switch:  # an on epoch: every step presamples
            out = {key: values[pick] for key, values in big.items() if key in batch}
            out["weight"] = w
            self.log_step(module, "active", torch.ones((), device=device), 1)
            return out
        active = before > self.tau_threshold(b)
        out = {}
        for key, values in big.items():
            if key in batch:
                out[key] = torch.where(active, values[pick], batch[key].to(device))
        out["weight"] = torch.where(active, w, torch.ones_like(w))
        self.log_step(module, "active", active.float(), 1)
        return out

    def weights(self, per_sample: torch.Tensor, logits: torch.Tensor, batch: dict, weights: torch.Tensor,
                module: pl.LightningModule) -> torch.Tensor:
        """An off epoch with score loss or upper_bound: the trained batch's scores from its training-mode logits
        (the official code's way, no extra forward pass)."""
        if self.params.switch == "epoch" and not self._on and self.params.score in ("loss", "upper_bound"):
            scores = logit_scores(logits.detach(), batch["y"], self.params.score, getattr(module, "num_classes", None))
            self._off_epoch_scores(scores, module)
        return weights
