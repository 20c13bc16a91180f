"""Dataset sources: IDX parsing, search order, CIFAR pickles, digits, synthetic sets, registry defaults."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from robustlearn.data.sources.cifar import CIFAR10, CIFAR100
from robustlearn.data.sources.digits import Digits
from robustlearn.data.sources.idx import MNIST, FashionMNIST, read_idx
from robustlearn.data.sources.synthetic import Synthetic
from robustlearn.errors import ConfigError, DataError
from robustlearn.registry import DATASETS
from tests.data_fakes import IDX_NAMES, idx_bytes

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def write_idx_set(directory: Path, n_train: int, n_test: int, gz: bool = True, fill: int = 0) -> None:
    """Four small IDX files (28×28 images filled with `fill`, labels i mod 10)."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = [
        np.full((n_train, 28, 28), fill, np.uint8),
        np.arange(n_train) % 10,
        np.full((n_test, 28, 28), fill, np.uint8),
        np.arange(n_test) % 10,
    ]
    for name, array in zip(IDX_NAMES, arrays):
        data = idx_bytes(array)
        (directory / (f"{name}.gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def clean_env(isolated_data, tmp_path):
    return tmp_path


def test_read_idx_raw_and_gzip_and_other_dtypes(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(a))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(read_idx(tmp_path / "a"), a)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)
    b = np.array([[1, -2], [300, 4]], dtype=">i4")
    (tmp_path / "b").write_bytes(struct.pack(">BBBBII", 0, 0, 0x0C, 2, 2, 2) + b.tobytes())
    assert read_idx(tmp_path / "b").tolist() == [[1, -2], [300, 4]]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\x00\x00", "shorter than"),
        (b"\x08\x03\x00\x00" + b"\x00" * 12, "magic number"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "header declares 3"),
        (idx_bytes(np.zeros((2, 3), np.uint8))[:-1], "truncated"),
        (idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00", "trailing"),
        (gzip.compress(idx_bytes(np.zeros((4, 4), np.uint8)))[:-10], "Cannot read"),
    ],
)
def test_corrupt_idx_names_the_file(tmp_path, content, why):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and why in str(e.value)


def test_corrupt_file_found_by_source_names_it(clean_env):
    root = clean_env / "data"
    write_idx_set(root, 3, 2, gz=False)
    (root / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-5])
    with pytest.raises(DataError) as e:
        MNIST().load(str(root), download=False)
    assert "t10k-images-idx3-ubyte" in str(e.value)


def test_mismatched_counts_are_reported(clean_env):
    root = clean_env / "data"
    write_idx_set(root, 3, 2)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(DataError, match="3 images but .* 4 labels"):
        MNIST().load(str(root), download=False)


def test_search_order_root_then_env_then_system_then_cache(clean_env, monkeypatch):
    tmp = clean_env
    write_idx_set(tmp / "root", 3, 2)
    write_idx_set(tmp / "env" / "fashion-mnist", 4, 2)  # alias subfolder
    write_idx_set(tmp / "system", 5, 2, gz=False)
    write_idx_set(tmp / "xdg" / "robustlearn" / "fashion_mnist", 6, 2)
    monkeypatch.setenv("ROBUSTLEARN_DATA", str(tmp / "env"))
    monkeypatch.setattr(FashionMNIST, "system_dirs", (str(tmp / "system"),))
    load = lambda root: len(FashionMNIST().load(root, download=False).y_train)
    assert load(str(tmp / "root")) == 3
    assert load(None) == 4
    monkeypatch.delenv("ROBUSTLEARN_DATA")
    assert load(None) == 5
    monkeypatch.setattr(FashionMNIST, "system_dirs", ())
    assert load(None) == 6


def test_dataset_subfolder_beats_files_directly_in_root(clean_env):
    root = clean_env / "data"
    write_idx_set(root, 3, 2)  # someone else's IDX files at the top
    write_idx_set(root / "mnist", 7, 2)
    assert len(MNIST().load(str(root), download=False).y_train) == 7


def test_arrays_have_the_contract_shapes(clean_env):
    root = clean_env / "data"
    write_idx_set(root, 20, 10, fill=51)
    s = FashionMNIST().load(str(root), download=False)
    assert s.x_train.shape == (20, 1, 28, 28) and s.x_train.dtype == np.uint8
    assert s.x_test.shape == (10, 1, 28, 28) and s.y_test.dtype == np.int64
    assert s.y_train.tolist() == [i % 10 for i in range(20)]
    assert s.mean == pytest.approx((0.2,)) and s.std == pytest.approx((0.0,), abs=1e-6)
    assert s.num_classes == 10 and s.class_names[9] == "Ankle boot" and s.is_image


def test_not_found_lists_every_place_and_the_fixes(clean_env, monkeypatch):
    tmp = clean_env
    (tmp / "root").mkdir()
    write_idx_set(tmp / "root", 3, 2)
    (tmp / "root" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("ROBUSTLEARN_DATA", str(tmp / "env"))
    monkeypatch.setattr(FashionMNIST, "system_dirs", (str(tmp / "debian"),))
    with pytest.raises(DataError) as e:
        FashionMNIST().load(str(tmp / "root"), download=False)
    msg = str(e.value)
    assert e.value.key == "data.root"
    for place in ("root", "root/fashion_mnist", "root/fashion-mnist", "env", "env/fashion_mnist", "debian"):
        assert str(tmp / place) + " (" in msg
    assert f"{tmp / 'root'} (missing t10k-labels-idx1-ubyte)" in msg
    for fix in ("dataset-fashion-mnist", "data.root", "ROBUSTLEARN_DATA", "data.download=true"):
        assert fix in msg
    assert not (tmp / "root" / "fashion_mnist").exists()  # nothing created without download


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_debian_package(clean_env, monkeypatch):
    monkeypatch.setattr(FashionMNIST, "system_dirs", (str(DEBIAN_FMNIST),))
    s = DATASETS.get("fashion_mnist")().load(None, download=False)
    assert s.x_train.shape == (60000, 1, 28, 28) and s.x_test.shape == (10000, 1, 28, 28)
    assert s.x_train.dtype == np.uint8 and s.x_train.max() == 255
    assert np.bincount(s.y_train).tolist() == [6000] * 10
    assert np.bincount(s.y_test).tolist() == [1000] * 10
    # Published Fashion-MNIST training statistics.
    assert s.mean[0] == pytest.approx(0.2860, abs=5e-4) and s.std[0] == pytest.approx(0.3530, abs=5e-4)


def write_cifar(folder: Path, files: dict[str, int], label_key: str, num_classes: int, meta: tuple) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in files.items():
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: list(np.arange(n) % num_classes),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta_name, key, names = meta
    (folder / meta_name).write_bytes(pickle.dumps({key: names}))


def test_cifar10_pickles(clean_env):
    root = clean_env / "data"
    files = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 3}
    names = [f"c{i}" for i in range(10)]
    write_cifar(root / "cifar-10-batches-py", files, "labels", 10, ("batches.meta", "label_names", names))
    s = CIFAR10().load(str(root), download=False)
    assert s.x_train.shape == (20, 3, 32, 32) and s.x_train.dtype == np.uint8
    assert s.x_test.shape == (3, 3, 32, 32) and s.class_names == names
    assert s.y_train.tolist() == [0, 1, 2, 3] * 5
    first = pickle.loads((root / "cifar-10-batches-py" / "data_batch_1").read_bytes())["data"][0]
    assert np.array_equal(s.x_train[0, 1].ravel(), first[1024:2048])  # rows are R, G, B planes
    assert len(s.mean) == 3 and all(0.45 < m < 0.55 for m in s.mean)


def test_cifar100_fine_labels(clean_env):
    root = clean_env / "data" / "cifar100"
    names = [f"f{i}".encode() for i in range(100)]
    write_cifar(
        root / "cifar-100-python",
        {"train": 200, "test": 100},
        "fine_labels",
        100,
        ("meta", "fine_label_names", names),
    )
    s = CIFAR100().load(str(clean_env / "data"), download=False)
    assert s.num_classes == 100 and s.y_train.max() == 99 and s.class_names[5] == "f5"


def test_cifar_unpickler_refuses_code(clean_env):
    root = clean_env / "data"
    files = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 2}
    write_cifar(root / "cifar-10-batches-py", files, "labels", 10, ("batches.meta", "label_names", []))
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": print}))
    with pytest.raises(DataError, match="test_batch"):
        CIFAR10().load(str(root), download=False)


def test_cifar_not_found(clean_env):
    with pytest.raises(DataError) as e:
        CIFAR100().load(str(clean_env / "nowhere"), download=False)
    assert "cifar-100-python" in str(e.value) and "data.download=true" in str(e.value)


def test_digits_fixed_stratified_split():
    s = Digits().load(None, download=False)
    assert s.x_train.shape == (1437, 1, 8, 8) and s.x_test.shape == (360, 1, 8, 8)
    assert s.x_train.dtype == np.uint8 and s.x_train.max() == 255
    full = np.bincount(np.concatenate([s.y_train, s.y_test]))
    assert np.all(np.abs(np.bincount(s.y_test) - 0.2 * full) <= 1)
    again = Digits(Digits.Params(test_fraction=0.2)).load(None, download=False)
    assert np.array_equal(s.x_test, again.x_test) and np.array_equal(s.y_train, again.y_train)
    assert len(Digits(Digits.Params(test_fraction=0.5)).load(None, False).y_test) == 899


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 0.001])
def test_digits_bad_fraction(fraction):
    with pytest.raises(ConfigError) as e:
        Digits(Digits.Params(test_fraction=fraction)).load(None, download=False)
    assert e.value.key == "data.test_fraction"


def test_synthetic_blobs():
    s = Synthetic().load(None, download=False)
    assert s.x_train.shape == (2000, 2) and s.x_test.shape == (1000, 2) and s.x_train.dtype == np.float32
    assert np.bincount(s.y_train).tolist() == [500] * 4 and s.num_classes == 4 and not s.is_image
    np.testing.assert_allclose(s.mean, s.x_train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(s.std, s.x_train.std(0), rtol=1e-5)
    # Each class is a Gaussian around its centre with std `spread`.
    within = np.concatenate([s.x_train[s.y_train == c] - s.x_train[s.y_train == c].mean(0) for c in range(4)])
    assert within.std() == pytest.approx(1.0, abs=0.05)
    same = Synthetic().load(None, False)
    other = Synthetic(Synthetic.Params(generator_seed=1)).load(None, False)
    assert np.array_equal(s.x_train, same.x_train) and not np.array_equal(s.x_train, other.x_train)
    big = Synthetic(Synthetic.Params(n_classes=7, n_features=5, n_train=70, n_test=7)).load(None, False)
    assert big.x_train.shape == (70, 5) and big.num_classes == 7 and len(big.mean) == 5


def test_synthetic_moons():
    s = Synthetic(Synthetic.Params(kind="moons", spread=0.0, n_train=400)).load(None, False)
    assert s.num_classes == 2 and s.x_train.shape == (400, 2)
    upper, lower = s.x_train[s.y_train == 0], s.x_train[s.y_train == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"kind": "circles"}, "data.kind"),
        ({"n_classes": 1}, "data.n_classes"),
        ({"n_train": 0}, "data.n_train"),
        ({"n_test": 2.5}, "data.n_test"),
        ({"n_features": 0}, "data.n_features"),
        ({"spread": -1.0}, "data.spread"),
        ({"generator_seed": -3}, "data.generator_seed"),
    ],
)
def test_synthetic_validation(params, key):
    with pytest.raises(ConfigError) as e:
        Synthetic(Synthetic.Params(**params)).load(None, False)
    assert e.value.key == key and key in str(e.value)


def test_registry_and_augmentation_defaults():
    expected = {
        "fashion_mnist": (2, True),
        "mnist": (2, False),
        "cifar10": (4, True),
        "cifar100": (4, True),
        "digits": (0, False),
        "synthetic": (0, False),
    }
    for name, (pad, flip) in expected.items():
        cls = DATASETS.get(name)
        assert (cls.default_crop_padding, cls.default_hflip) == (pad, flip), name
