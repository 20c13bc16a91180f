"""Fetching dataset files: checksummed, atomic downloads and safe archive extraction.

`download(url, dest, md5)` streams `url` into a hidden temporary file next to `dest`, checks its MD5 and
renames it onto `dest` in one step, so `dest` either holds the complete, verified file or does not exist.
`extract_tar(archive, dest)` unpacks a tarball, refusing members that would land outside `dest` (absolute
paths, `..`, links, devices).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from robustlearn.errors import DataError

CHUNK = 1 << 20
USER_AGENT = "robustlearn (dataset download)"


def md5sum(path: str | Path) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Download `url` to `dest`, checking the MD5 digest when `md5` is given; return `dest`.

    The bytes go to a temporary file in `dest`'s directory (created if needed) and are renamed onto `dest`
    only once complete and verified. A network error, an HTTP error or a checksum mismatch raises DataError
    naming the URL and the file, and leaves neither `dest` nor the temporary file behind.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DataError(f"Cannot write into {dest.parent} to download {url}: {e}.", key=str(dest)) from e
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if md5 is not None and got != md5.lower():
            raise DataError(
                f"Checksum mismatch for {url} (to be saved as {dest}): expected MD5 {md5}, got {got}. "
                "The file was not kept; the server or mirror may serve a different or damaged file.",
                key=str(dest),
            )
        os.replace(tmp, dest)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"Download of {url} to {dest} failed: {e}. Nothing was saved.", key=str(dest)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _check_member(member: tarfile.TarInfo, root: Path, archive: Path) -> Path:
    name = member.name
    target = (root / name).resolve()
    if os.path.isabs(name) or ".." in Path(name).parts or not target.is_relative_to(root):
        raise DataError(f"Refusing to extract {archive}: member '{name}' would land outside {root}.")
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"Refusing to extract {archive}: member '{name}' is a link or special file; "
            "dataset archives hold only regular files and directories."
        )
    return target


def extract_tar(archive: str | Path, dest: str | Path) -> Path:
    """Extract a (possibly compressed) tarball into `dest`, rejecting path traversal, links and devices.

    Every member is checked before anything is written. Returns `dest`.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            targets = [_check_member(m, root, archive) for m in members]
            for member, target in zip(members, targets):
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
    except (tarfile.TarError, EOFError, OSError) as e:
        msg = f"Cannot extract {archive}: {e}. Delete it and download again."
        raise DataError(msg, key=str(archive)) from e
    return dest
