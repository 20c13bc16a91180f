"""FileSource: the search-then-download logic shared by every source that reads files from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from robustlearn.data.base import ArraySet, Source
from robustlearn.data.sources.locate import cache_dir, describe_place, search_dirs
from robustlearn.errors import DataError


class FileSource(Source):
    """Looks for its files where `locate` says, downloads them into the cache if allowed, then reads them.

    Subclasses give `find(directory)` (what `read` needs, or None when files are missing), `missing(directory)`,
    `fetch_all(directory)`, `read(found)` and `fix(download)` (the how-to-fix sentence of the not-found error).
    """

    title: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    system_dirs: ClassVar[tuple[str, ...]] = ()

    def find(self, directory: Path) -> Any | None:  # pragma: no cover - interface
        raise NotImplementedError

    def missing(self, directory: Path) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def fetch_all(self, directory: Path) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self, found: Any) -> ArraySet:  # pragma: no cover - interface
        raise NotImplementedError

    def fix(self, download: bool) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, root: str | None, download: bool) -> ArraySet:
        dirs = search_dirs(self.registry_name, self.aliases, root, self.system_dirs)
        for directory in dirs:
            found = self.find(directory)
            if found:
                return self.read(found)
        failure = ""
        if download:
            target = cache_dir(self.registry_name, root)
            try:
                self.fetch_all(target)
            except DataError as e:
                failure = f" Downloading into {target} failed: {e}"
            else:
                found = self.find(target)
                if found:
                    return self.read(found)
                failure = f" The download into {target} did not provide {', '.join(self.missing(target))}."
        places = "; ".join(describe_place(d, self.missing(d)) for d in dirs)
        raise DataError(f"{self.title} not found. Looked in: {places}.{failure} Fix: {self.fix(download)}",
                        key="data.root")
