"""DivideMix: noisy labels as semi-supervised learning, with two networks that divide the data for each other.

Li, Socher & Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised Learning", ICLR 2020, arXiv 2002.07394;
official code github.com/LiJunnan1992/DivideMix (`Train_cifar.py`).

Two networks: the module's network (net 1) and a peer (`OwnedNetwork`, net 2), each with its own optimiser.

1. Warm-up, epochs 0 .. `warmup_epochs` − 1: cross-entropy on the noisy labels for both networks (optionally plus the
   negative entropy Σ_k p_k log p_k, the official warm-up's confidence penalty for asymmetric noise:
   `warmup_penalty`).
2. Co-divide, at the end of every epoch from the last warm-up epoch on (the official code does it at the start of
   the next one: the same point): each network scores the whole training split once in eval mode (`full_pass`), its
   per-sample cross-entropy on the noisy labels is min-max normalised and a 2-component `GaussianMixture`
   (scikit-learn; max_iter 10, reg_covar 5e-4, tol 1e-2 as the official code) is fitted to it; a sample's clean
   probability is its posterior under the component with the smaller mean. Net 1 trains with the division of net
   2's mixture (w = p₂, labelled where p₂ > `p_threshold`) and net 2 with net 1's (co-divide). The probabilities live
   in two `PerSampleBuffer`s (checkpointed).
3. MixMatch, every step after the warm-up, for each network (formulas in `robustlearn.strategies.noisy.mixmatch`):
   two augmented views of each sample; for the labelled samples label co-refinement
   sharpen(w y + (1 − w) p̄, T), p̄ the network's mean prediction over the two views; for the unlabelled ones label
   co-guessing sharpen(mean of both networks' predictions over both views, T); MixUp of the 2B view rows with
   λ ~ Beta(α, α), λ' = max(λ, 1 − λ), one random permutation over all rows; then

       loss = Lx + λu(t) Lu + Σ_k π_k log(π_k / q̄_k),     λu(t) = `lambda_u` · clip((t − warmup_epochs) / R, 0, 1)

   with Lx the soft cross-entropy over the mixed labelled rows, Lu the squared error (mean over rows and classes)
   over the mixed unlabelled rows, π uniform, q̄ the mean prediction over all mixed rows, t = epoch + step / steps
   and R = `rampup_epochs` (the official `linear_rampup`). The network's own predictions on the views are in train
   mode without gradient, the other network's in eval mode (as the official code's `net.train(); net2.eval()`).
4. Evaluation (validation and test) scores the mean of the two networks' logits (`eval_logits`; the official test
   adds them, which has the same argmax).

How it runs in one step of the protocol (`provides_loss`): `loss()` gets the module's logits of the batch, which
serve as net 1's train-mode prediction on the first view (the loader's augmentation of the batch); the second view is
`datamodule.augment` of the stored original samples, drawn from a generator seeded by (seed, epoch, rank) like
`draw`, and λ from a NumPy generator seeded the same way, so a resumed run draws exactly what an uninterrupted one
would. `loss()` runs the module's network on net 1's mixed rows and returns per-sample values whose batch mean is
net 1's DivideMix loss: sample i gets B·(c_i + c_{i+B}), the contributions of the two mixed rows led by its two views
(c = Lx row / labelled rows, λu Lu row / unlabelled rows, prior / 2B). Inside the same hook the peer builds its own
targets from its own division and takes its step (`peer.step`). Where the stored split does not live on the
training device (`data.loader=dataloader` on an accelerator, whose index would have to be read on the host), the
second view is the augmentation of the loader's view instead.

Differences from the official code, all forced by the one-pass-per-batch protocol:
- The official code trains net 1 for a whole epoch, then net 2, each over its labelled set (N_labelled / B steps,
  a labelled batch of B and an unlabelled batch of B drawn from a second loader, 4B mixed rows). Here both networks
  step on every batch of the full split, whose samples are labelled or unlabelled by their clean probability: the
  mixed batch is 2B rows with the two kinds in the split's proportion (Lx and Lu are each still a mean over their
  own rows); an epoch is N / B steps.
- The official warm-up uses batches of 2B; here the run's batch size.
- At 90 % noise the official code averages each sample's normalised loss over the last 5 epochs before the mixture
  fit; not done here.

Defaults (official code and paper, CIFAR-10): p_threshold 0.5, temperature 0.5, alpha 4, lambda_u 25 (the paper's
table for 50 % symmetric noise; it uses 0 at 20 % symmetric and 40 % asymmetric, 25 at 80 %, 50 at 90 %),
rampup_epochs 16, warmup_epochs 10 (official CIFAR-10 of 300 epochs; 30 for CIFAR-100). `configs/methods/dividemix.yaml`
shortens the warm-up and the ramp for this repository's 8–20 epoch schedules (see the file).

When to use it: high symmetric noise and real-world noise, where it is among the strongest methods; it needs enough
epochs after the warm-up for the semi-supervised phase. Cost per step after the warm-up: about 6 forward passes of a
batch per network (own train-mode predictions on 2 views — net 1's first is the step's forward —, the other
network's eval-mode predictions on 2 views, 2B mixed rows) and a backward of 2B rows each — roughly 6–7× plain
cross-entropy; the warm-up costs 2×; plus two eval-mode passes over the training split and two mixture fits per
epoch. No oracle information is read (the clean
labels never are; the noise rate only through the user's choice of lambda_u).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from robustlearn.data.gpu_loader import epoch_seed
from robustlearn.errors import ConfigError
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.buffers import PerSampleBuffer
from robustlearn.strategies.full_pass import full_pass
from robustlearn.strategies.noisy.mixmatch import negative_entropy, semi_supervised_loss
from robustlearn.strategies.owned import OwnedNetwork
from robustlearn.strategies.params import is_number, is_whole
from robustlearn.strategies.ramps import epochs_done, linear_ramp
from robustlearn.strategies.scoring import scoring

_STREAM_SALT = 31  # the views, permutations and λ of a step (the loader uses 1, its transfer 2, `draw` 3)
_GMM_SALT = 37  # the mixture fits' initialisation

# The official mixture: GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4).
GMM_OPTIONS = {"n_components": 2, "max_iter": 10, "tol": 1e-2, "reg_covar": 5e-4}


def clean_probability(losses, random_state: int = 0) -> np.ndarray:
    """Per-sample clean probability from per-sample losses: min-max normalise, fit a 2-component Gaussian mixture,
    return each sample's posterior under the component with the smaller mean (float64, shape (N,))."""
    values = np.asarray(losses, dtype=np.float64).reshape(-1)
    low, span = values.min(), values.max() - values.min()
    normed = ((values - low) / span if span > 0 else np.zeros_like(values))[:, None]
    gmm = GaussianMixture(random_state=random_state, **GMM_OPTIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 10 iterations, as the official code, often stop early
        gmm.fit(normed)
    return gmm.predict_proba(normed)[:, int(gmm.means_.argmin())]


def _probabilities(logits: torch.Tensor, k: int) -> torch.Tensor:
    return torch.softmax(logits[:, :k].float(), dim=1)


@STRATEGIES.register("dividemix")
class DivideMix(Strategy):
    """DivideMix (Li et al. 2020): two networks, GMM co-divide into labelled/unlabelled, MixMatch with co-refinement
    and co-guessing; evaluates the mean of both networks."""

    needs = ("datamodule", "build_network", "num_classes")

    provides_loss = True
    state_attrs = ("peer", "prob_main", "prob_peer")

    @dataclass
    class Params:
        warmup_epochs: int = 10  # epochs of cross-entropy on both networks first, >= 1 (official CIFAR-10: 10)
        p_threshold: float = 0.5  # clean probability above which a sample is labelled, 0 < τ < 1 (official: 0.5)
        temperature: float = 0.5  # sharpening temperature T, > 0 (official: 0.5)
        alpha: float = 4.0  # MixUp λ ~ Beta(alpha, alpha), > 0 (official: 4)
        lambda_u: float = 25.0  # weight of the unlabelled loss, >= 0 (official CIFAR-10 50 % sym: 25; 20 % sym: 0)
        rampup_epochs: int = 16  # epochs over which lambda_u ramps up linearly after the warm-up, >= 0 (official: 16)
        warmup_penalty: bool = False  # add the negative entropy to the warm-up loss (official: asymmetric noise only)

        def __post_init__(self):
            w = self.warmup_epochs
            if not (is_whole(w) and w >= 1):
                raise ConfigError(f"dividemix: warmup_epochs = {w!r} must be an integer >= 1 (the mixture is fitted "
                                  "to the losses of warmed-up networks).", "warmup_epochs")
            if not (is_number(self.p_threshold) and 0.0 < self.p_threshold < 1.0):
                raise ConfigError(f"dividemix: p_threshold = {self.p_threshold!r} is out of range; it must be a number "
                                  "> 0 and < 1 (a clean probability).", "p_threshold")
            if not (is_number(self.temperature) and self.temperature > 0.0):
                raise ConfigError(f"dividemix: temperature = {self.temperature!r} is out of range; it must be a "
                                  "number > 0.", "temperature")
            if not (is_number(self.alpha) and self.alpha > 0.0):
                raise ConfigError(f"dividemix: alpha = {self.alpha!r} is out of range; it must be a number > 0 "
                                  "(the Beta distribution's parameter).", "alpha")
            if not (is_number(self.lambda_u) and self.lambda_u >= 0.0):
                raise ConfigError(f"dividemix: lambda_u = {self.lambda_u!r} is out of range; it must be a number "
                                  ">= 0.", "lambda_u")
            if not (is_whole(self.rampup_epochs) and self.rampup_epochs >= 0):
                raise ConfigError(f"dividemix: rampup_epochs = {self.rampup_epochs!r} must be an integer >= 0 "
                                  "(0: lambda_u at once).", "rampup_epochs")
            if not isinstance(self.warmup_penalty, bool):
                raise ConfigError(f"dividemix: warmup_penalty = {self.warmup_penalty!r} must be true or false.",
                                  "warmup_penalty")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.peer: OwnedNetwork | None = None
        # Clean probabilities from each network's mixture: prob_peer divides the module's network's data (co-divide),
        # prob_main the peer's. None until the end of the last warm-up epoch.
        self.prob_main = PerSampleBuffer()
        self.prob_peer = PerSampleBuffer()
        self.dm = None
        self._stream_key: tuple | None = None
        self._generator: torch.Generator | None = None
        self._rng: np.random.Generator | None = None

    # ---- set-up ------------------------------------------------------------------------------------------------
    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        epochs = cfg["trainer"]["epochs"]
        if params.warmup_epochs >= epochs:
            raise ConfigError(
                f"dividemix: warmup_epochs = {params.warmup_epochs} is not below trainer.epochs = {epochs}: the run "
                "would never leave the cross-entropy warm-up. Lower warmup_epochs or train for more epochs.",
                "warmup_epochs")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.check_against_trainer(trainer)
        self.dm = self.datamodule(trainer)
        self.peer = OwnedNetwork(pl_module)

    # ---- streams ---------------------------------------------------------------------------------------------
    def _streams(self, trainer: pl.Trainer, device: torch.device) -> tuple[torch.Generator, np.random.Generator]:
        """The step's generators, seeded by (seed, epoch, rank): a resumed run (which restarts at an epoch) draws
        what an uninterrupted one would."""
        key = (trainer.current_epoch, trainer.global_rank, str(device))
        if self._stream_key != key:
            seed = epoch_seed(self.dm.cfg.seed, key[0], salt=_STREAM_SALT + 1000 * key[1])
            self._generator = torch.Generator(device=device).manual_seed(seed)
            self._rng = np.random.default_rng(seed)
            self._stream_key = key
        return self._generator, self._rng

    def _mix_draw(self, rng: np.random.Generator, g: torch.Generator, rows: int, device) -> tuple[float, torch.Tensor]:
        lam = float(rng.beta(self.params.alpha, self.params.alpha))  # on the host: no read of the device
        return max(lam, 1.0 - lam), torch.randperm(rows, generator=g, device=device)

    def _second_view(self, batch: dict, g: torch.Generator) -> torch.Tensor:
        stored = self.dm.train_tensors()["x"]
        index = batch["index"]
        source = stored[index] if stored.device == index.device else batch["x"]
        return self.dm.augment(source, g)

    @staticmethod
    def _epochs_done(trainer: pl.Trainer) -> float:
        """epoch + step / steps, as the official ramp counts (the current step's index)."""
        return epochs_done(trainer)

    def lambda_u_at(self, epochs_done: float) -> float:
        """λu · clip((t − warmup_epochs) / rampup_epochs, 0, 1)."""
        return self.params.lambda_u * linear_ramp(epochs_done, self.params.warmup_epochs, self.params.rampup_epochs)

    # ---- the step ----------------------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        trainer = module.trainer
        if trainer.current_epoch < self.params.warmup_epochs:
            return self._warmup_loss(logits, batch, module)
        if self.prob_peer.values is None or self.prob_main.values is None:
            raise RuntimeError("dividemix: no clean probabilities after the warm-up; they are fitted at the end of "
                               "epoch warmup_epochs - 1.")
        return self._dividemix_loss(logits, batch, module)

    def _warmup_loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        k, y = module.num_classes, batch["y"]
        main = F.cross_entropy(logits[:, :k].float(), y, reduction="none")
        peer_logits = self.peer(batch["x"])[:, :k].float()
        peer = F.cross_entropy(peer_logits, y, reduction="none")
        if self.params.warmup_penalty:
            main = main + negative_entropy(logits[:, :k])
            peer = peer + negative_entropy(peer_logits)
        self.peer.step(peer.mean())
        self.log_step(module, "peer_loss", peer.detach().mean(), len(y))
        return main

    def _dividemix_loss(self, logits: torch.Tensor, batch: dict, module: pl.LightningModule) -> torch.Tensor:
        trainer, p = module.trainer, self.params
        k, y, index = module.num_classes, batch["y"], batch["index"]
        b, device = len(y), logits.device
        g, rng = self._streams(trainer, device)
        x1 = batch["x"]
        x2 = self._second_view(batch, g)
        with torch.no_grad():  # each network's own predictions, in train mode (as the official code)
            main_own = (_probabilities(logits.detach(), k), _probabilities(module(x2), k))
            peer_own = (_probabilities(self.peer(x1), k), _probabilities(self.peer(x2), k))
        with scoring(module, self.peer.net):  # and the other network's, in eval mode
            both = torch.cat([x1, x2])
            main_eval = _probabilities(module(both), k).split(b)
            peer_eval = _probabilities(self.peer.net(both), k).split(b)
        lambda_u = self.lambda_u_at(self._epochs_done(trainer))

        w_main = self.prob_peer[index]  # co-divide: the module's network learns from the peer's division
        labelled_main = w_main > p.p_threshold
        lam, perm = self._mix_draw(rng, g, 2 * b, device)
        per_sample, parts = semi_supervised_loss(
            (x1, x2), main_own, peer_eval, y, w_main, labelled_main, lambda z: module(z)[:, :k], lam, perm,
            p.temperature, lambda_u)

        w_peer = self.prob_main[index]
        lam, perm = self._mix_draw(rng, g, 2 * b, device)
        peer_per_sample, _ = semi_supervised_loss(
            (x1, x2), peer_own, main_eval, y, w_peer, w_peer > p.p_threshold, lambda z: self.peer(z)[:, :k], lam,
            perm, p.temperature, lambda_u)
        peer_loss = peer_per_sample.mean()
        self.peer.step(peer_loss)

        self.log_step(module, "labelled", labelled_main.float().mean(), b)
        for key, value in parts.items():
            self.log_step(module, key, value, b)
        self.log_step(module, "lambda_u", lambda_u, b)
        self.log_step(module, "peer_loss", peer_loss.detach(), b)
        return per_sample

    # ---- co-divide, once per epoch -----------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch + 1 < self.params.warmup_epochs or epoch + 1 >= trainer.max_epochs:
            return
        k = pl_module.num_classes
        y = self.dm.train_tensors()["y"]
        random_state = epoch_seed(self.dm.cfg.seed, epoch, salt=_GMM_SALT) % (2**32)
        for net, buffer in ((None, self.prob_main), (self.peer.net, self.prob_peer)):
            scores = full_pass(pl_module, self.dm, net)[:, :k]
            losses = F.cross_entropy(scores, y.to(scores.device), reduction="none")
            prob = clean_probability(losses.cpu().numpy(), random_state)  # once per epoch
            buffer.ensure(trainer)
            buffer.values = torch.as_tensor(prob, dtype=buffer.dtype).to(buffer.values.device)
        # The shares labelled for the next epoch: the module's network's (by the peer's mixture) and the peer's.
        tau = self.params.p_threshold
        self.log_metric(pl_module, "labelled_next", float((self.prob_peer.values > tau).float().mean()))
        self.log_metric(pl_module, "peer_labelled_next", float((self.prob_main.values > tau).float().mean()))

    # ---- evaluation and diagnostics --------------------------------------------------------------------------------
    def eval_logits(self, x: torch.Tensor, logits: torch.Tensor, module: pl.LightningModule) -> torch.Tensor:
        """The mean of the module's logits and the peer's (eval mode, no gradient)."""
        if self.peer is None:
            return logits
        with scoring(self.peer.net):
            other = self.peer.net(x)
        return (logits + other.to(logits.dtype)) / 2

    def kept_mask(self) -> torch.Tensor | None:
        """The samples the module's network trains on as labelled (the peer's mixture, p > p_threshold)."""
        values = self.prob_peer.values
        return None if values is None else values > self.params.p_threshold
