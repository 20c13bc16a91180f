"""The one datamodule: any registered source, seeded label noise, a noisy validation split, a clean test set.

Splits: `train` (noisy labels), `val` (held out from train, noisy labels: model selection never sees the test
set), `test` (clean). Noise is applied once to the whole training set before the split, seeded by `noise.seed`.
Batches follow the batch contract: `x`, `y` (observed), `y_clean` (diagnostics only), `index` (position in the
training split). With `data.loader=device` (default) each split is one tensor on the device; with
`data.loader=dataloader` a torch DataLoader feeds the same dicts and augmentation runs on the device after transfer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from robustlearn.data.augment import random_crop_flip
from robustlearn.data.base import ArraySet, NoiseInfo
from robustlearn.data.gpu_loader import DeviceLoader, epoch_seed
from robustlearn.data.noise import apply_noise
from robustlearn.data.sampler import EpochSampler
from robustlearn.data.strategy_data import StrategyDataAPI
from robustlearn.errors import ConfigError
from robustlearn.registry import DATASETS
from robustlearn.schema import DataCfg, NoiseCfg, entry_params


class _DictDataset(Dataset):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["y"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class RobustDataModule(StrategyDataAPI, pl.LightningDataModule):
    """Strategies read and steer the training data through the API of `StrategyDataAPI` (`set_train_subset`,
    `set_train_batch_size`, `train_tensors`, `augment`, `draw`)."""

    def __init__(self, cfg: DictConfig):
        super().__init__()
        self._init_strategy_data()
        self.static_batches = bool(cfg.trainer.compile)  # one training batch shape (drop the last partial batch)
        self.cfg = cfg
        self.data_cfg = cfg.data
        self.augments_after_transfer = False
        self.loaded = False
        self.splits: dict[str, dict[str, torch.Tensor]] = {}
        self.loaders: dict[str, Any] = {}
        self.noise_info: NoiseInfo | None = None

    # ---- loading (also called before a run starts, so that missing data is bad input) -------------------
    def load(self) -> RobustDataModule:
        if self.loaded:
            return self
        d = self.data_cfg
        source_cls = DATASETS.get(d.name, key="data.name")
        source = source_cls(source_cls.Params(**entry_params(d, DataCfg)))
        arrays: ArraySet = source.load(d.root, d.download)
        x, y = arrays.x_train, arrays.y_train.astype(np.int64)
        x_test, y_test = arrays.x_test, arrays.y_test.astype(np.int64)
        self.num_classes = arrays.num_classes
        self.class_names = list(arrays.class_names)
        self.other_classes_test: dict[str, torch.Tensor] | None = None  # set with data.classes (diagnostics)
        if d.classes is not None:
            keep = self._check_classes(list(d.classes), arrays.num_classes)
            x, y = _keep_classes(x, y, keep)
            other = ~np.isin(y_test, keep)
            x_other, y_other = x_test[other], y_test[other]
            x_test, y_test = _keep_classes(x_test, y_test, keep)
            self.num_classes = len(keep)
            self.class_names = [self.class_names[c] for c in keep]
        if d.subset is not None:
            if d.subset > len(y):
                raise ConfigError(f"data.subset: {d.subset} is more than the {len(y)} training samples.", "data.subset")
            x, y = x[: d.subset], y[: d.subset]
        self.input_shape = tuple(x.shape[1:])
        self.crop_padding = source.default_crop_padding if d.crop_padding is None else d.crop_padding
        self.hflip = source.default_hflip if d.hflip is None else d.hflip
        # The DataLoader path augments each training batch once it is on the device (read per batch: cached here).
        self.augments_after_transfer = d.loader == "dataloader" and bool(self.crop_padding or self.hflip)
        if not arrays.is_image and (self.crop_padding or self.hflip):
            raise ConfigError("data.crop_padding / data.hflip: augmentation needs image data.", "data.crop_padding")

        n = self.cfg.noise
        if d.classes is not None and n.kind == "asymmetric":
            raise ConfigError("noise.kind: asymmetric noise follows the dataset's own class map, which data.classes "
                              "relabels; use symmetric, pairflip, matrix or instance noise with data.classes.",
                              "noise.kind")
        features = (x.reshape(len(x), -1).astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0))
        noisy, self.noise_info = apply_noise(
            n.kind, entry_params(n, NoiseCfg), y, self.num_classes, n.rate, n.seed, features, d.name
        )

        perm = np.random.default_rng(d.split_seed).permutation(len(y))
        n_val = int(round(d.val_fraction * len(y)))
        if n_val == 0 and d.val_fraction > 0:
            n_val = 1
        if len(y) - n_val < 1:
            raise ConfigError("data.val_fraction: leaves no training samples.", "data.val_fraction")
        val_ids, train_ids = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        self.train_ids = train_ids

        mean = torch.tensor(arrays.mean, dtype=torch.float32)
        std = torch.tensor(arrays.std, dtype=torch.float32)
        prep = lambda a: self._normalise(a, mean, std)
        self.splits["train"] = self._split(prep(x[train_ids]), noisy[train_ids], y[train_ids])
        if n_val:
            self.splits["val"] = self._split(prep(x[val_ids]), noisy[val_ids], y[val_ids])
        self.splits["test"] = self._split(prep(x_test), y_test, y_test)
        if d.classes is not None and len(y_other):
            # The left-out classes' test images, with their original labels: what a binary model calls them.
            self.other_classes_test = {"x": prep(x_other), "y": torch.as_tensor(y_other, dtype=torch.long)}
        self.train_size = len(train_ids)
        self.loaded = True
        return self

    @staticmethod
    def _check_classes(classes: list, num_classes: int) -> list[int]:
        ok = all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < num_classes for c in classes)
        if not ok or len(set(classes)) != len(classes) or len(classes) < 2:
            raise ConfigError(f"data.classes: {classes!r} must be at least two different class indices in "
                              f"0..{num_classes - 1} (e.g. [0, 6] for T-shirt/top against shirt).", "data.classes")
        return classes

    @staticmethod
    def _normalise(a: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a)).float()
        if a.dtype == np.uint8:
            t = t / 255.0
        shape = (1, -1, 1, 1) if t.ndim == 4 else (1, -1)
        t = (t - mean.view(shape)) / std.view(shape)
        return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t

    @staticmethod
    def _split(x: torch.Tensor, y: np.ndarray, y_clean: np.ndarray) -> dict[str, torch.Tensor]:
        return {
            "x": x,
            "y": torch.as_tensor(np.asarray(y), dtype=torch.long),
            "y_clean": torch.as_tensor(np.asarray(y_clean), dtype=torch.long),
            "index": torch.arange(len(y), dtype=torch.long),
        }

    # ---- Lightning hooks ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _rank_and_world(self, train: bool) -> tuple[int, int]:
        if not train or self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _make(self, split: str, train: bool):
        d = self.data_cfg
        bs = self.train_batch_size if train else d.eval_batch_size
        rank, world = self._rank_and_world(train)
        if d.loader == "dataloader":
            sampler = EpochSampler(len(self.splits[split]["y"]), self.cfg.seed, self._epoch, shuffle=train,
                                   rank=rank, world_size=world, batch_size=bs, drop_single=train)
            drop = train and self.static_batches and len(sampler) >= bs
            return DataLoader(_DictDataset(self.splits[split]), batch_size=bs, sampler=sampler, drop_last=drop,
                              num_workers=d.num_workers, pin_memory=torch.cuda.is_available())
        loader = DeviceLoader(
            dict(self.splits[split]), bs, shuffle=train, seed=self.cfg.seed, epoch_fn=self._epoch,
            crop_padding=self.crop_padding if train else 0, hflip=self.hflip if train else False,
            rank=rank, world_size=world, drop_last=train and self.static_batches, drop_single=train,
        )
        return loader.to(self._device())

    def train_dataloader(self):
        """Called by Lightning at the start of every epoch: applies the subset and batch size chosen for it."""
        self._agree_across_ranks()
        loader = self.loaders.get("train")
        if loader is None or loader.batch_size != self.train_batch_size:
            if isinstance(loader, DeviceLoader):
                loader.batch_size = self.train_batch_size
            else:
                loader = self.loaders["train"] = self._make("train", train=True)
        (loader.sampler if isinstance(loader, DataLoader) else loader).set_indices(self._subset)
        return loader

    def val_dataloader(self):
        # Validation (noisy, for model selection) and test (clean) are both evaluated every epoch.
        for split in ("val", "test"):
            if split in self.splits and split not in self.loaders:
                self.loaders[split] = self._make(split, train=False)
        return [self.loaders[s] for s in ("val", "test") if s in self.loaders]

    def test_dataloader(self):
        return self.val_dataloader()[-1]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if (self.augments_after_transfer and trainer is not None and trainer.training):
            step = trainer.global_step
            g = torch.Generator(device=batch["x"].device).manual_seed(epoch_seed(self.cfg.seed, step, salt=2))
            batch["x"] = random_crop_flip(batch["x"], self.crop_padding, self.hflip, g)
        return batch

    @property
    def val_split_names(self) -> list[str]:
        return [s for s in ("val", "test") if s in self.splits]


def _keep_classes(x: np.ndarray, y: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The samples of the classes in `keep`, relabelled to their position in it."""
    mask = np.isin(y, keep)
    relabel = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    return x[mask], relabel[y[mask]]
