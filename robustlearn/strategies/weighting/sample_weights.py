"""Per-sample loss weights by training position (`sample_weights`), from a file or from the true flip mask.

    w_i ← w_i · c · u_{index_i},      loss = Σ_i w_i ℓ_i / B      (the step's reduction, docs/design.md)

u (N,) holds one weight per sample of the training split, in position order (`batch["index"]`, the position in
the training split after the validation hold-out). The incoming w_i are multiplied, not replaced (a presampler's
importance weights, another strategy's weights). u comes from exactly one of:

- `file: path` — a `.npy` (numpy array), `.pt` (a torch tensor, read with `weights_only`) or `.csv` (one weight
  per line, an optional header line) with N weights, each finite and >= 0, not all 0. The file is read and checked
  when the config loads (exit 2 on a bad file) and again when training starts, where its length is checked
  against the training split. Its contents are not part of the config hash: a checkpoint records a fingerprint of
  u, and resuming with a changed file is refused.
- `flipped: w` — an oracle rule: u_i = w where the noise generator flipped sample i's label, 1 elsewhere. It reads
  the generator's flip mask (`datamodule.noise_info.flip_mask`, over the noisy set before the split), mapped to
  training positions through the split's sorted ids (`datamodule.train_ids`: position p of the training split is
  sample `train_ids[p]` of the noisy set). The run is marked with `oracle = "true flip mask"`. `flipped: 0` trains
  on the clean samples only: the flipped samples then contribute exactly nothing to the gradient, the upper
  reference that sample selection methods aim at.

`normalize` (default true, as `class_weights`) sets c = N / Σ_j u_j: the mean weight over the training split is
one, so the effective learning rate stays that of unweighted training. With `flipped: 0` this makes each step the
unbiased mean of the loss over the clean samples. Without it (c = 1) the effective learning rate is scaled by the
mean of u (1 − noise rate for `flipped: 0`).

u is a float32 device tensor looked up by `batch["index"]` (no host sync in the step); it is rebuilt in `setup`
from the config and the data, so nothing but its fingerprint is checkpointed. Cost: one gather and one multiply
per step, N floats of device memory. Use it for studies of what a given weighting does (weights computed offline,
e.g. by another model's confidence) and, with the flip mask, for the oracle bound of reweighting under label noise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from robustlearn.errors import ConfigError, RunFailed
from robustlearn.registry import STRATEGIES
from robustlearn.strategies.base import Strategy
from robustlearn.strategies.params import is_number

SUFFIXES = (".npy", ".pt", ".csv")


def _read_csv(path: Path) -> np.ndarray:
    try:
        return np.loadtxt(path, delimiter=",", ndmin=1, dtype=np.float64)
    except ValueError:
        return np.loadtxt(path, delimiter=",", ndmin=1, dtype=np.float64, skiprows=1)  # a header line


def read_weights(path: str | Path, key: str = "file") -> np.ndarray:
    """One weight per sample from a .npy, .pt or .csv file, float64 (N,); ConfigError naming `key` and the file
    where it cannot be read or holds something other than finite weights >= 0, not all 0."""
    path = Path(path).expanduser()
    where = f"sample_weights: file {str(path)!r}"
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"{where}: unknown format {path.suffix!r}; use one of {', '.join(SUFFIXES)}.", key)
    if not path.is_file():
        raise ConfigError(f"{where} does not exist.", key)
    try:
        if path.suffix.lower() == ".npy":
            raw = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".pt":
            raw = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(raw, torch.Tensor):
                raise ValueError(f"it holds a {type(raw).__name__}, not a tensor")
            raw = raw.detach().to(torch.float64).numpy()
        else:
            raw = _read_csv(path)
    except Exception as exc:  # any reader's failure is the file's problem
        raise ConfigError(f"{where} cannot be read as weights: {exc}", key) from exc
    raw = np.asarray(raw)
    if raw.dtype.kind not in "biuf":
        raise ConfigError(f"{where}: expected numbers, got dtype {raw.dtype}.", key)
    u = raw.astype(np.float64).reshape(-1) if raw.ndim == 2 and 1 in raw.shape else raw.astype(np.float64)
    if u.ndim != 1 or len(u) == 0:
        raise ConfigError(f"{where}: expected one weight per training sample (a 1-D array), got shape "
                          f"{tuple(raw.shape)}.", key)
    bad = ~np.isfinite(u)
    if bad.any():
        raise ConfigError(f"{where}: {int(bad.sum())} weights are not finite (NaN or infinite), the first at "
                          f"position {int(np.argmax(bad))}; every weight must be a finite number >= 0.", key)
    negative = u < 0
    if negative.any():
        first = int(np.argmax(negative))
        raise ConfigError(f"{where}: {int(negative.sum())} weights are negative, the first {u[first]!r} at position "
                          f"{first}; every weight must be >= 0.", key)
    if not (u > 0).any():
        raise ConfigError(f"{where}: every weight is 0; nothing would be trained on.", key)
    return u


def fingerprint(u: torch.Tensor) -> str:
    """sha256 of the weights as float64 bytes: what a checkpoint records of them."""
    return hashlib.sha256(u.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()).hexdigest()


@STRATEGIES.register("sample_weights")
class SampleWeights(Strategy):
    """Per-sample weights u_{index}: from a file, or w on the samples whose label was flipped (oracle)."""

    needs = ("datamodule",)

    state_attrs = ("fingerprint",)

    @dataclass
    class Params:
        file: str | None = None  # .npy / .pt / .csv, one weight >= 0 per training sample in position order
        flipped: float | None = None  # oracle rule: weight of the samples whose label was flipped (others: 1), >= 0
        normalize: bool = True  # mean weight over the training split = 1 (as class_weights)

        def __post_init__(self):
            if (self.file is None) == (self.flipped is None):
                raise ConfigError(
                    "sample_weights: give exactly one of `file` (weights from a file) and `flipped` (the oracle "
                    f"rule); got file = {self.file!r}, flipped = {self.flipped!r}.",
                    "flipped" if self.flipped is not None else "file")
            if self.file is not None:
                if not isinstance(self.file, str) or not self.file:
                    raise ConfigError(f"sample_weights: file = {self.file!r} must be a path.", "file")
                if Path(self.file).suffix.lower() not in SUFFIXES:
                    raise ConfigError(f"sample_weights: file = {self.file!r} has an unknown format; use one of "
                                      f"{', '.join(SUFFIXES)}.", "file")
            if self.flipped is not None and not (is_number(self.flipped) and self.flipped >= 0):
                raise ConfigError(f"sample_weights: flipped = {self.flipped!r} must be a finite number >= 0.",
                                  "flipped")
            if not isinstance(self.normalize, bool):
                raise ConfigError(f"sample_weights: normalize = {self.normalize!r} must be true or false.",
                                  "normalize")

    def __init__(self, params=None, position: int = 0):
        super().__init__(params, position)
        self.vector: torch.Tensor | None = None  # u (N,), float32 on the training device, set in setup
        self.fingerprint: str | None = None
        self._kept: torch.Tensor | None = None

    @property
    def oracle(self) -> str | None:
        return "true flip mask" if self.params.flipped is not None else None

    @classmethod
    def check_config(cls, params, cfg: dict) -> None:
        if params.file is not None:
            read_weights(params.file)  # exit 2 on a bad file; the length is checked against the split in setup

    # ---- the weights ----------------------------------------------------------------------------------------
    def build(self, dm) -> torch.Tensor:
        """u (N,) float64 on the CPU for the datamodule's training split, normalised where asked."""
        key = f"strategies[{self.position}]"
        n = dm.train_size
        if self.params.file is not None:
            try:
                u = read_weights(self.params.file)
            except ConfigError as exc:
                raise ConfigError(f"{key}.file: {exc}", f"{key}.file") from exc
            if len(u) != n:
                raise ConfigError(
                    f"{key}.file: sample_weights: file {self.params.file!r} holds {len(u)} weights, but the training "
                    f"split has {n} samples (after data.subset and the validation hold-out); give one weight per "
                    "training position.", f"{key}.file")
            u = torch.from_numpy(u)
        else:
            u = torch.ones(n, dtype=torch.float64)
            u[train_flip_mask(dm)] = float(self.params.flipped)  # oracle, by the user's choice (recorded)
            if not (u > 0).any():
                raise RunFailed(f"{key}: sample_weights: flipped = {self.params.flipped} and every training label "
                                "was flipped; nothing would be trained on.")
        if self.params.normalize:
            u = u / u.mean()
        return u

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        u = self.build(self.datamodule(trainer))
        self.fingerprint = fingerprint(u)
        self.vector = u.to(trainer.strategy.root_device, torch.float32)
        self._kept = (u > 0).to(trainer.strategy.root_device) if bool((u == 0).any()) else None

    def load_state_dict(self, state_dict) -> None:
        saved = state_dict.get("fingerprint")
        if saved is not None and self.fingerprint is not None and saved != self.fingerprint:
            raise RunFailed(f"strategies[{self.position}]: sample_weights: the weights differ from those of the "
                            f"checkpoint (file {self.params.file!r} changed since?); a resumed run must train with "
                            "the same weights. Restore the file or start a new run.")

    def weights(self, per_sample, logits, batch, weights, module):
        u = self.vector
        if u.device != weights.device:  # a device comparison, not a tensor read: no sync
            u = self.vector = u.to(weights.device)
        return weights * u[batch["index"]].to(weights.dtype)

    def kept_mask(self) -> torch.Tensor | None:
        """The samples with weight > 0, where some weight is 0 (`diagnostics` scores it against the flip mask)."""
        return self._kept


def train_flip_mask(dm) -> torch.Tensor:
    """The noise generator's flip mask at the training split's positions (bool, N): the mask covers the noisy set
    before the validation hold-out; position p of the training split is sample `dm.train_ids[p]` of it."""
    info = getattr(dm, "noise_info", None)
    ids = getattr(dm, "train_ids", None)
    if info is None or ids is None:
        raise RunFailed("sample_weights: the flipped rule needs the noise generator's flip mask and the training "
                        "split's ids; the datamodule has none.")
    mask = np.asarray(info.flip_mask, dtype=bool)[np.asarray(ids)]
    if len(mask) != dm.train_size:
        raise RunFailed(f"sample_weights: the flip mask maps to {len(mask)} training positions, the split has "
                        f"{dm.train_size}.")
    return torch.from_numpy(mask)

