"""Downloads against a local HTTP server: checksum, atomic rename, cleanup, parsing, safe extraction."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from robustlearn.data.download import download, extract_tar, md5sum
from robustlearn.data.sources.cifar import CIFAR10
from robustlearn.data.sources.idx import MNIST, FashionMNIST
from robustlearn.errors import DataError
from tests.data_fakes import IDX_NAMES, idx_bytes

ROLES = ("train_images", "train_labels", "test_images", "test_labels")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(served directory, base URL) of an HTTP server on 127.0.0.1, random port, in a thread."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def env(isolated_data):
    return isolated_data


def serve_idx(folder: Path, n_train: int = 12, n_test: int = 5) -> dict[str, tuple[str, str]]:
    """Write gzipped fake IDX files into `folder`; return a `files` table (role -> (name, md5))."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28)),
        np.arange(n_train) % 10,
        rng.integers(0, 256, (n_test, 28, 28)),
        np.arange(n_test) % 10,
    ]
    table = {}
    for role, name, array in zip(ROLES, IDX_NAMES, arrays):
        data = gzip.compress(idx_bytes(array))
        (folder / f"{name}.gz").write_bytes(data)
        table[role] = (name, hashlib.md5(data).hexdigest())
    return table


def test_download_checks_md5_and_renames(server, tmp_path):
    served, url = server
    (served / "f.bin").write_bytes(b"hello" * 1000)
    dest = tmp_path / "out" / "f.bin"
    assert download(url + "f.bin", dest, hashlib.md5(b"hello" * 1000).hexdigest()) == dest
    assert dest.read_bytes() == b"hello" * 1000
    assert md5sum(dest) == hashlib.md5(b"hello" * 1000).hexdigest()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]


def test_wrong_checksum_raises_and_leaves_nothing(server, tmp_path):
    served, url = server
    (served / "f.bin").write_bytes(b"payload")
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(DataError) as e:
        download(url + "f.bin", dest, "0" * 32)
    assert url + "f.bin" in str(e.value) and str(dest) in str(e.value) and "0" * 32 in str(e.value)
    assert list(dest.parent.iterdir()) == []


def test_http_and_network_errors_leave_nothing(server, tmp_path):
    _, url = server
    dest = tmp_path / "out" / "missing.bin"
    with pytest.raises(DataError, match="404"):
        download(url + "missing.bin", dest, None)
    with pytest.raises(DataError, match="127.0.0.1:1/"):
        download("http://127.0.0.1:1/x", dest, None, timeout=5)
    assert list(dest.parent.iterdir()) == []


def test_fashion_mnist_download_via_mirror_end_to_end(server, env, tmp_path):
    served, url = server
    env.setattr(FashionMNIST, "files", serve_idx(served / "fashion_mnist"))
    env.setenv("ROBUSTLEARN_MIRROR", url.rstrip("/"))
    root = tmp_path / "data"
    s = FashionMNIST().load(str(root), download=True)
    assert s.x_train.shape == (12, 1, 28, 28) and s.y_test.tolist() == [0, 1, 2, 3, 4]
    gz = gzip.decompress((served / "fashion_mnist" / "train-images-idx3-ubyte.gz").read_bytes())
    assert np.array_equal(s.x_train.ravel(), np.frombuffer(gz, np.uint8, offset=16))
    saved = sorted(p.name for p in (root / "fashion_mnist").iterdir())
    assert saved == sorted(f"{n}.gz" for n in IDX_NAMES)
    for p in served.rglob("*.gz"):
        p.unlink()  # the second load must use the downloaded copies
    assert FashionMNIST().load(str(root), download=True).x_train.shape == (12, 1, 28, 28)


def test_mnist_download_via_base_url_into_the_cache(server, env, tmp_path):
    served, url = server
    env.setattr(MNIST, "files", serve_idx(served / "mirror", n_train=20))
    env.setattr(MNIST, "base_url", url + "mirror/")
    s = MNIST().load(None, download=True)
    assert len(s.y_train) == 20
    assert (tmp_path / "xdg" / "robustlearn" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_source_with_wrong_checksum_reports_and_keeps_nothing(server, env, tmp_path):
    served, url = server
    files = serve_idx(served / "mirror")
    files["test_labels"] = (files["test_labels"][0], "f" * 32)
    env.setattr(MNIST, "files", files)
    env.setattr(MNIST, "base_url", url + "mirror/")
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        MNIST().load(str(root), download=True)
    msg = str(e.value)
    assert "Checksum mismatch" in msg and "t10k-labels-idx1-ubyte.gz" in msg and "Looked in" in msg
    assert not (root / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not any(p.name.endswith(".part") for p in root.rglob("*"))


def test_corrupt_downloaded_idx_names_the_file(server, env, tmp_path):
    served, url = server
    files = serve_idx(served / "mirror")
    bad = gzip.compress(idx_bytes(np.zeros((5, 28, 28)))[:-100])  # body shorter than the header says
    (served / "mirror" / "t10k-images-idx3-ubyte.gz").write_bytes(bad)
    files["test_images"] = ("t10k-images-idx3-ubyte", hashlib.md5(bad).hexdigest())
    env.setattr(MNIST, "files", files)
    env.setattr(MNIST, "base_url", url + "mirror/")
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        MNIST().load(str(root), download=True)
    assert str(root / "mnist" / "t10k-images-idx3-ubyte.gz") in str(e.value)
    assert "truncated" in str(e.value)


def cifar_tarball() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in names:
            batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [3, 7]}
            data = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cifar10_tarball_download_and_extract(server, env, tmp_path):
    served, url = server
    blob = cifar_tarball()
    (served / "cifar10").mkdir()
    (served / "cifar10" / "cifar-10-python.tar.gz").write_bytes(blob)
    env.setattr(CIFAR10, "md5", hashlib.md5(blob).hexdigest())
    env.setenv("ROBUSTLEARN_MIRROR", url)
    root = tmp_path / "data"
    s = CIFAR10().load(str(root), download=True)
    assert s.x_train.shape == (10, 3, 32, 32) and s.y_test.tolist() == [3, 7]
    assert s.class_names == [str(i) for i in range(10)]  # no batches.meta in this archive
    assert sorted(p.name for p in (root / "cifar10").iterdir()) == ["cifar-10-batches-py"]


def make_tar(path: Path, members: list[tarfile.TarInfo]) -> None:
    with tarfile.open(path, "w") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)


def file_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil-robustlearn", "ok/../../evil"])
def test_extract_refuses_path_traversal(tmp_path, name):
    archive = tmp_path / "a.tar"
    make_tar(archive, [file_info("good"), file_info(name)])
    with pytest.raises(DataError, match="outside"):
        extract_tar(archive, tmp_path / "dest")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "dest" / "good").exists()


def test_extract_refuses_links(tmp_path):
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = tmp_path / "a.tar"
    make_tar(archive, [link])
    with pytest.raises(DataError, match="link"):
        extract_tar(archive, tmp_path / "dest")


def test_extract_damaged_archive(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=str(archive)):
        extract_tar(archive, tmp_path / "dest")


def test_unwritable_destination_is_a_data_error(server, tmp_path):
    _, url = server
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(DataError, match="Cannot write into"):
        download(url + "x", blocker / "sub" / "x", None)
