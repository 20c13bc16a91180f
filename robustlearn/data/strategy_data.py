"""The datamodule's public data API for strategies: the training subset, the batch size, the tensors, draws.

Strategies never reach into a loader. Everything here works on both loader paths (`data.loader=device` and
`dataloader`), follows the training augmentation and the DDP rank, and is saved in the datamodule's own
`state_dict`, which Lightning writes into every checkpoint and restores before the first epoch of a resumed run is
sized. Choices made for the next epoch (`set_train_subset`, `set_train_batch_size`) take effect when Lightning
reloads the training loader at the start of that epoch (the runner sets `reload_dataloaders_every_n_epochs=1`),
so the epoch's length, the validation point and the epoch-wise schedules all see them.
"""

from __future__ import annotations

import torch

from robustlearn.data.augment import random_crop_flip
from robustlearn.data.gpu_loader import epoch_seed

_DRAW_SALT = 3
_VIEW_SALT = 11


class StrategyDataAPI:
    """Mixed into `RobustDataModule`. Needs `cfg`, `data_cfg`, `splits`, `loaders`, `train_size`, `crop_padding`,
    `hflip`, `trainer`, `_epoch()`, `_device()` and `_rank_and_world()`."""

    def _init_strategy_data(self) -> None:
        self._subset: torch.Tensor | None = None
        self._batch_size: int | None = None
        self._draw_gen: torch.Generator | None = None
        self._draw_key: tuple | None = None

    # ---- choices for the next epochs ----------------------------------------------------------------------
    def set_train_subset(self, indices: torch.Tensor | None) -> None:
        """Train the following epochs on these positions of the training split (None: all of them).

        Call it on every rank at the same point, e.g. in `on_train_epoch_end`; under DDP the first rank's choice is
        the one every rank uses, so the ranks take the same number of steps."""
        if indices is None:
            self._subset = None
            return
        idx = torch.as_tensor(indices).detach()
        if idx.ndim != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"set_train_subset: expected a 1-D integer tensor of positions, got {idx.dtype} "
                             f"{tuple(idx.shape)}")
        idx = torch.unique(idx.to("cpu", torch.long))
        if len(idx) == 0:
            raise ValueError("set_train_subset: the subset is empty; keep at least one training sample.")
        if int(idx[0]) < 0 or int(idx[-1]) >= self.train_size:
            raise ValueError(f"set_train_subset: positions must lie in [0, {self.train_size}), got "
                             f"[{int(idx[0])}, {int(idx[-1])}].")
        self._subset = idx

    @property
    def train_subset(self) -> torch.Tensor | None:
        """The positions the current epoch trains on (sorted, on the CPU), or None for the whole split."""
        return self._subset

    def set_train_batch_size(self, batch_size: int | None) -> None:
        """The training batch size from the next epoch on (None: `data.batch_size`)."""
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                       or batch_size < 1):
            raise ValueError(f"set_train_batch_size: expected a positive integer, got {batch_size!r}")
        self._batch_size = None if batch_size is None else int(batch_size)

    @property
    def train_batch_size(self) -> int:
        return self.data_cfg.batch_size if self._batch_size is None else self._batch_size

    # ---- reading the training data ------------------------------------------------------------------------
    def train_tensors(self) -> dict[str, torch.Tensor]:
        """The whole training split (`x`, `y`, `y_clean`, `index`), not augmented: on the training device with
        `data.loader=device`, in host memory with `data.loader=dataloader`. `y_clean` is for diagnostics only."""
        loader = self.loaders.get("train")
        if self.data_cfg.loader == "device" and loader is not None:
            return loader.tensors
        return self.splits["train"]

    def holdout_tensors(self) -> dict[str, torch.Tensor] | None:
        """The validation split (`x`, `y` noisy like training, `y_clean`, `index`), not augmented, in host memory; None
        where `data.val_fraction` is 0. For strategies that fit a model on held-out data (RHO-LOSS's irreducible
        loss); note the same split picks the best epoch."""
        return self.splits.get("val")

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training augmentation (random crop and flip, as configured) of a batch, drawn from `generator`,
        which lives on `x.device`. Returns `x` itself where the data has no augmentation."""
        if x.dim() != 4 or not (self.crop_padding or self.hflip):
            return x
        return random_crop_flip(x, self.crop_padding, self.hflip, generator)

    def draw(self, n: int, generator: torch.Generator | None = None, source: str = "subset") -> dict[str, torch.Tensor]:
        """`n` training samples drawn uniformly with replacement, augmented, on the training device, as a batch dict:
        from the current subset (`source="subset"`, the default: what this epoch trains on, e.g. InfoBatch's pruned
        set) or from the whole training split (`source="split"`: a method whose draws stand for the data
        distribution, such as peer loss's independent pairs, must not see a subset another strategy chose).

        Without `generator`, draws come from the datamodule's own stream, seeded by (seed, epoch, rank): ranks draw
        independently, and a resumed run draws what an uninterrupted one would."""
        if source not in ("subset", "split"):
            raise ValueError(f"draw: source = {source!r} must be 'subset' (the current training subset) or 'split' "
                             "(the whole training split).")
        device = self._device()
        g = generator if generator is not None else self._draw_generator(device)
        pool = self._subset if source == "subset" else None
        m = self.train_size if pool is None else len(pool)
        pos = torch.randint(m, (int(n),), generator=g, device=g.device)
        tensors = self.train_tensors()
        store = tensors["y"].device
        pos = pos.to(store)
        if pool is not None:
            pos = pool.to(store)[pos]
        batch = {k: v[pos].to(device, non_blocking=True) for k, v in tensors.items()}
        batch["x"] = self.augment(batch["x"], g if g.device == device else self._draw_generator(device))
        return batch

    def views(self, index: torch.Tensor, m: int, step: int | None = None) -> torch.Tensor:
        """`m` independently augmented views of the raw training images at positions `index` (a batch's `index`),
        shape (m, B, ...), on the training device: what consistency losses (GJS, DivideMix's, ProMix's) need.

        View v of a step comes from a generator seeded by (run seed, epoch, step, v, rank), `step` the trainer's
        global step by default: the same step's views are drawn again after a resume, and the views are independent
        of the loader's own augmentation stream and of `draw`. Without augmentation the views are the raw images."""
        if not (isinstance(m, int) and m >= 1):
            raise ValueError(f"views: m = {m!r} must be an integer >= 1.")
        device = self._device()
        tensors = self.train_tensors()
        x = tensors["x"][index.to(tensors["x"].device)].to(device, non_blocking=True)
        if step is None:
            step = int(self.trainer.global_step) if self.trainer is not None else 0
        epoch, rank = self._epoch(), self._rank_and_world(train=True)[0]
        out = []
        for v in range(m):
            salt = _VIEW_SALT + 1000 * rank + 100_000 * v
            g = torch.Generator(device=device).manual_seed(epoch_seed(self.cfg.seed * 1_000_003 + step, epoch, salt))
            out.append(self.augment(x, g))
        return torch.stack(out)

    def _draw_generator(self, device: torch.device) -> torch.Generator:
        key = (self._epoch(), self._rank_and_world(train=True)[0], str(device))
        if self._draw_gen is None or self._draw_key != key:
            seed = epoch_seed(self.cfg.seed, key[0], salt=_DRAW_SALT + 1000 * key[1])
            self._draw_gen = torch.Generator(device=device).manual_seed(seed)
            self._draw_key = key
        return self._draw_gen

    # ---- one choice on every rank, and checkpointed ---------------------------------------------------------
    def _agree_across_ranks(self) -> None:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            self._subset, self._batch_size = trainer.strategy.broadcast((self._subset, self._batch_size), src=0)

    def state_dict(self) -> dict:
        return {"train_subset": self._subset, "train_batch_size": self._batch_size}

    def load_state_dict(self, state: dict) -> None:
        self._subset = state.get("train_subset")
        self._batch_size = state.get("train_batch_size")
