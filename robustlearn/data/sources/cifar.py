"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) in the "python version" pickle format.

CIFAR-10: `cifar-10-batches-py/data_batch_1..5`, `test_batch` (and `batches.meta` for class names).
CIFAR-100: `cifar-100-python/train`, `test` (fine labels; `meta` for names). The folder is looked for as
described in `locate` (no system directory); downloads fetch the tarball, check its MD5, extract it safely
and delete it. The pickles are read with an unpickler that only admits plain containers and numpy arrays.
Images come back as uint8 `(N, 3, 32, 32)`, mean and std from the training set.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robustlearn.data.base import ArraySet
from robustlearn.data.download import download as fetch
from robustlearn.data.download import extract_tar
from robustlearn.data.sources.files import FileSource
from robustlearn.data.sources.locate import channel_stats, mirror_url
from robustlearn.errors import DataError
from robustlearn.registry import DATASETS

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a dataset file")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys; DataError naming the file if it cannot be read."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        msg = f"Cannot read CIFAR file {path}: {e}. Delete it and download again."
        raise DataError(msg, key=str(path)) from e
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR batch (expected a dict).", key=str(path))
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


class CifarSource(FileSource):
    """A CIFAR dataset: subclasses give the folder, files, label key and download URL/MD5."""

    folder: ClassVar[str] = ""
    train_files: ClassVar[tuple[str, ...]] = ()
    test_files: ClassVar[tuple[str, ...]] = ()
    meta_file: ClassVar[str] = ""
    label_key: ClassVar[str] = ""
    names_key: ClassVar[str] = ""
    num_classes: ClassVar[int] = 0
    url: ClassVar[str] = ""
    md5: ClassVar[str] = ""
    default_crop_padding = 4
    default_hflip = True

    def required(self) -> list[str]:
        return [*self.train_files, *self.test_files]

    def find(self, directory: Path) -> Path | None:
        folder = directory / self.folder
        return folder if all((folder / f).is_file() for f in self.required()) else None

    def missing(self, directory: Path) -> list[str]:
        folder = directory / self.folder
        return [f"{self.folder}/{f}" for f in self.required() if not (folder / f).is_file()]

    def fetch_all(self, directory: Path) -> None:
        """Download the tarball into `directory`, check its MD5, extract it there and delete it."""
        archive_name = self.url.rsplit("/", 1)[-1]
        base = mirror_url(self.registry_name, self.url.rsplit("/", 1)[0])
        archive = fetch(base + archive_name, directory / archive_name, self.md5)
        try:
            extract_tar(archive, directory)
        finally:
            archive.unlink(missing_ok=True)

    def fix(self, download: bool) -> str:
        how = "" if download else " or set data.download=true to fetch it,"
        return (f"extract {self.url} into a directory (giving {self.folder}/) and point data.root or "
                f"$ROBUSTLEARN_DATA at it,{how} then run again.")

    def _split(self, folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in files:
            path = folder / name
            batch = read_batch(path)
            if "data" not in batch or self.label_key not in batch:
                raise DataError(f"{path} lacks the 'data' or '{self.label_key}' entry of a CIFAR batch.")
            data = np.asarray(batch["data"], dtype=np.uint8)
            labels = np.asarray(batch[self.label_key], dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
                got = f"{data.shape}, {labels.shape}"
                raise DataError(f"{path}: expected data (N, 3072) and N labels, got {got}.")
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DataError(f"{path}: labels outside 0..{self.num_classes - 1}.")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(labels)
        return np.concatenate(xs), np.concatenate(ys)

    def _names(self, folder: Path) -> list[str]:
        meta = folder / self.meta_file
        if meta.is_file():
            names = read_batch(meta).get(self.names_key)
            if names is not None and len(names) == self.num_classes:
                return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        return [str(i) for i in range(self.num_classes)]

    def read(self, folder: Path) -> ArraySet:
        x_train, y_train = self._split(folder, self.train_files)
        x_test, y_test = self._split(folder, self.test_files)
        mean, std = channel_stats(x_train)
        return ArraySet(x_train, y_train, x_test, y_test, self.num_classes, self._names(folder), mean, std)


@DATASETS.register("cifar10")
class CIFAR10(CifarSource):
    """CIFAR-10 (Krizhevsky 2009): 50 000 + 10 000 32×32 colour images, 10 classes.
    Defaults: random crop with padding 4, horizontal flip."""

    title = "CIFAR-10"
    aliases = ("cifar10", "cifar-10", "CIFAR10")
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"
    num_classes = 10
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"


@DATASETS.register("cifar100")
class CIFAR100(CifarSource):
    """CIFAR-100 (Krizhevsky 2009): 50 000 + 10 000 32×32 colour images, 100 fine classes.
    Defaults: random crop with padding 4, horizontal flip."""

    title = "CIFAR-100"
    aliases = ("cifar100", "cifar-100", "CIFAR100")
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"
    num_classes = 100
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
