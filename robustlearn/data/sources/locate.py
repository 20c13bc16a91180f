"""Where dataset files are looked for, and the helpers every file-backed source shares.

Search order for a dataset `name` (first directory holding every required file wins):

1. `data.root` (the `root` argument),
2. `$ROBUSTLEARN_DATA`,
3. system directories of the source (for Fashion-MNIST `/usr/share/datasets/fashion-mnist`, from the Debian
   package `dataset-fashion-mnist`),
4. the cache directory: `<data.root>/<name>` when `data.root` is set, else
   `$XDG_CACHE_HOME/robustlearn/<name>` (`~/.cache/robustlearn/<name>` by default). Downloads go here.

In each of these, the subfolders named after the dataset (e.g. `fashion_mnist`, `fashion-mnist`) are tried
before the directory itself, so one `data.root` can hold several datasets side by side.

`$ROBUSTLEARN_MIRROR`, when set, replaces the download base URLs: files are fetched from
`$ROBUSTLEARN_MIRROR/<name>/<file>`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

DATA_ENV = "ROBUSTLEARN_DATA"
MIRROR_ENV = "ROBUSTLEARN_MIRROR"


def cache_dir(name: str, root: str | os.PathLike | None) -> Path:
    """The directory a dataset is downloaded into."""
    if root:
        return Path(root).expanduser() / name
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "robustlearn" / name


def search_dirs(
    name: str,
    aliases: Sequence[str],
    root: str | os.PathLike | None,
    system_dirs: Iterable[str | os.PathLike] = (),
) -> list[Path]:
    """Every directory looked at, in order, without duplicates."""
    bases: list[Path] = []
    if root:
        bases.append(Path(root).expanduser())
    env = os.environ.get(DATA_ENV)
    if env:
        bases.append(Path(env).expanduser())
    bases.extend(Path(d) for d in system_dirs)
    out: list[Path] = []
    for base in bases:
        for candidate in [base / a for a in aliases] + [base]:
            if candidate not in out:
                out.append(candidate)
    cache = cache_dir(name, root)
    if cache not in out:
        out.append(cache)
    return out


def mirror_url(name: str, default_base: str) -> str:
    """Base URL (ending in '/') to download `name` from: `$ROBUSTLEARN_MIRROR/<name>/` or the default."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + f"/{name}/"
    return default_base if default_base.endswith("/") else default_base + "/"


def describe_place(path: Path, missing: Sequence[str]) -> str:
    """'path (no such directory)' or 'path (missing a, b)' for the not-found message."""
    if not path.is_dir():
        return f"{path} (no such directory)"
    return f"{path} (missing {', '.join(missing)})"


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images `(N, C, H, W)` in [0, 1] units, computed in chunks."""
    n, c = x.shape[:2]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, n, chunk):
        block = x[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
    count = n * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
