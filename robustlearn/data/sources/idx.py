"""MNIST and Fashion-MNIST from IDX files (LeCun et al. 1998; Xiao, Rasul & Vollgraf 2017).

Each needs `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte`, gzipped (`.gz`) or raw, in one directory; see `locate` for where they are looked
for. Downloads fetch the `.gz` files and check their MD5. Images come back as uint8 `(N, 1, 28, 28)`, mean
and std from the training set.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from robustlearn.data.base import ArraySet
from robustlearn.data.download import download as fetch
from robustlearn.data.sources.files import FileSource
from robustlearn.data.sources.locate import channel_stats, mirror_url
from robustlearn.errors import DataError
from robustlearn.registry import DATASETS

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
ROLES = ("train_images", "train_labels", "test_images", "test_labels")


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (gzipped or raw) into an array of the shape its header declares.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then each dimension as a big-endian uint32. A bad header, a
    truncated body, trailing bytes or a damaged gzip stream raise DataError naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        msg = f"Cannot read IDX file {path}: {e}. Delete it so it is fetched again."
        raise DataError(msg, key=str(path)) from e

    def bad(why: str) -> DataError:
        return DataError(
            f"{path} is not a valid IDX file: {why}. It may be truncated or corrupt; delete it and "
            "download it again.",
            key=str(path),
        )

    if len(raw) < 4:
        raise bad(f"only {len(raw)} bytes, shorter than the 4-byte magic number")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _DTYPES:
        raise bad(f"magic number 0x{raw[:4].hex()} (expected 0x0000 then a type code and a dimension count)")
    if ndim == 0:
        raise bad("the header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad(f"header declares {ndim} dimensions but the file ends after {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise bad(f"{what}: shape {dims} needs {expected} data bytes, found {body}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


class IdxSource(FileSource):
    """A 10-class 28×28 grayscale dataset stored as four IDX files; subclasses give names, URLs and MD5s."""

    base_url: ClassVar[str] = ""
    files: ClassVar[dict[str, tuple[str, str]]] = {}  # role -> (file name without .gz, MD5 of the .gz)
    class_names: ClassVar[list[str]] = []
    install_hint: ClassVar[str] = ""

    def find(self, directory: Path) -> dict[str, Path] | None:
        """The four files in `directory` (raw preferred over .gz), or None if any is missing."""
        found = {}
        for role, (name, _) in self.files.items():
            for candidate in (directory / name, directory / f"{name}.gz"):
                if candidate.is_file():
                    found[role] = candidate
                    break
            else:
                return None
        return found

    def missing(self, directory: Path) -> list[str]:
        names = [n for n, _ in self.files.values()]
        return [n for n in names if not any((directory / f).is_file() for f in (n, f"{n}.gz"))]

    def fetch_all(self, directory: Path) -> None:
        """Download the missing `.gz` files into `directory`, checking each MD5."""
        base = mirror_url(self.registry_name, self.base_url)
        for name, md5 in self.files.values():
            if not ((directory / name).is_file() or (directory / f"{name}.gz").is_file()):
                fetch(base + f"{name}.gz", directory / f"{name}.gz", md5)

    def fix(self, download: bool) -> str:
        how = "" if download else " or set data.download=true to fetch them,"
        return (f"{self.install_hint}put the four IDX files ({', '.join(n for n, _ in self.files.values())}, "
                f"gzipped or not) in a directory and point data.root or $ROBUSTLEARN_DATA at it,{how} then run again.")

    def read(self, paths: dict[str, Path]) -> ArraySet:
        arrays = {role: read_idx(p) for role, p in paths.items()}
        for split in ("train", "test"):
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            ipath, lpath = paths[f"{split}_images"], paths[f"{split}_labels"]
            if images.ndim != 3 or images.dtype != np.uint8:
                got = f"{images.dtype} {images.shape}"
                raise DataError(f"{ipath}: expected uint8 images (N, H, W), got {got}.")
            if labels.ndim != 1:
                raise DataError(f"{lpath}: expected a vector of labels, got shape {labels.shape}.")
            if len(images) != len(labels):
                raise DataError(f"{ipath} holds {len(images)} images but {lpath} holds {len(labels)} labels.")
            if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise DataError(f"{lpath}: labels outside 0..{len(self.class_names) - 1}.")
        if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
            raise DataError(
                f"{paths['train_images']} and {paths['test_images']} hold images of different sizes."
            )
        x_train = arrays["train_images"][:, None]
        mean, std = channel_stats(x_train)
        return ArraySet(
            x_train=x_train,
            y_train=arrays["train_labels"].astype(np.int64),
            x_test=arrays["test_images"][:, None],
            y_test=arrays["test_labels"].astype(np.int64),
            num_classes=len(self.class_names),
            class_names=list(self.class_names),
            mean=mean,
            std=std,
        )


@DATASETS.register("fashion_mnist")
class FashionMNIST(IdxSource):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 60 000 + 10 000 28×28 grayscale images of 10 kinds of
    clothing. Defaults: random crop with padding 2, horizontal flip. Also looked for in
    `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`)."""

    title = "Fashion-MNIST"
    aliases = ("fashion_mnist", "fashion-mnist", "FashionMNIST")
    system_dirs = ("/usr/share/datasets/fashion-mnist",)
    base_url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    files = {
        "train_images": ("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": ("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": ("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": ("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310"),
    }
    class_names = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]  # fmt: skip
    install_hint = "install the Debian package (apt-get install dataset-fashion-mnist), or "
    default_crop_padding = 2
    default_hflip = True


@DATASETS.register("mnist")
class MNIST(IdxSource):
    """MNIST handwritten digits (LeCun et al. 1998): 60 000 + 10 000 28×28 grayscale images.
    Defaults: random crop with padding 2, no flip (flipped digits are other symbols)."""

    title = "MNIST"
    aliases = ("mnist", "MNIST")
    base_url = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    files = {
        "train_images": ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
    }
    class_names = [str(d) for d in range(10)]
    default_crop_padding = 2
    default_hflip = False
