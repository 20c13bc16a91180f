"""Label-noise kinds: exact per-class counts, maps, formulas for T, seeding and parameter errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from robustlearn.data.noise import apply_noise
from robustlearn.data.noise.common import empirical_transition, exact_count, largest_remainder
from robustlearn.data.noise.instance import Instance
from robustlearn.data.sources.idx import read_idx
from robustlearn.errors import ConfigError

FMNIST_LABELS = Path("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz")
K = 10
# Unequal class sizes (sum 10 000), so "exact per class" is not hidden by balance.
SIZES = [881, 923, 958, 1004, 1041, 1077, 1119, 962, 997, 1038]


def labels_with_sizes(sizes, seed=123) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))


@pytest.fixture(scope="module")
def y10k() -> np.ndarray:
    return labels_with_sizes(SIZES)  # 10 000 labels


@pytest.fixture(scope="module")
def fmnist_labels() -> np.ndarray:
    if not FMNIST_LABELS.is_file():
        pytest.skip("Fashion-MNIST is not installed at /usr/share/datasets/fashion-mnist")
    return read_idx(FMNIST_LABELS).astype(np.int64)


def half_up(x: float) -> int:
    return math.floor(x + 0.5)


def flips_per_class(y, noisy, k=K) -> np.ndarray:
    return np.bincount(y[noisy != y], minlength=k)


def test_symmetric_exclusive_exact_rate_per_class(y10k):
    noisy, info = apply_noise("symmetric", {}, y10k, K, 0.4, seed=0)
    assert abs(info.rate_actual - 0.40) < 0.01
    expected = [half_up(0.4 * n) for n in SIZES]
    assert flips_per_class(y10k, noisy).tolist() == expected
    # Exclusive: every chosen sample changes, so flips are exactly the chosen ones.
    assert info.flip_mask.sum() == sum(expected)
    t = np.full((K, K), 0.4 / 9)
    np.fill_diagonal(t, 0.6)
    np.testing.assert_allclose(info.transition, t)
    # Targets uniform over the other classes: offsets 1..9 each ~ 4000 / 9 ≈ 444 (sd ≈ 20).
    offsets = np.bincount((noisy - y10k)[info.flip_mask] % K, minlength=K)
    assert offsets[0] == 0
    assert np.all(np.abs(offsets[1:] - sum(expected) / 9) < 90)


def test_symmetric_inclusive_rate_is_r_times_k_minus_1_over_k(y10k):
    noisy, info = apply_noise("symmetric", {"variant": "inclusive"}, y10k, K, 0.4, seed=0)
    assert abs(info.rate_actual - 0.4 * 9 / 10) < 0.01
    assert info.rate_actual < 0.4  # some redrawn samples keep their label
    t = np.full((K, K), 0.04)
    np.fill_diagonal(t, 0.64)
    np.testing.assert_allclose(info.transition, t)
    # No class loses more than its chosen share round(r n_c).
    assert np.all(flips_per_class(y10k, noisy) <= [half_up(0.4 * n) for n in SIZES])


def test_symmetric_on_fashion_mnist_labels(fmnist_labels):
    noisy, info = apply_noise("symmetric", {}, fmnist_labels, K, 0.4, seed=3)
    assert info.rate_actual == pytest.approx(0.4, abs=1e-12)  # 6000 per class: 2400 each, exactly
    assert flips_per_class(fmnist_labels, noisy).tolist() == [2400] * K


def test_pairflip_goes_to_next_class(y10k):
    noisy, info = apply_noise("pairflip", {}, y10k, K, 0.45, seed=1)
    flipped = info.flip_mask
    assert np.array_equal(noisy[flipped], (y10k[flipped] + 1) % K)
    assert flips_per_class(y10k, noisy).tolist() == [half_up(0.45 * n) for n in SIZES]
    t = 0.55 * np.eye(K)
    for i in range(K):
        t[i, (i + 1) % K] = 0.45
    np.testing.assert_allclose(info.transition, t)


FMNIST_MAP = {9: 7, 7: 5, 2: 6, 4: 3}


def check_asymmetric(y, noisy, rate, mapping):
    flipped = noisy != y
    assert set(np.unique(y[flipped])) <= set(mapping)
    for src, dst in mapping.items():
        sel = flipped & (y == src)
        assert np.all(noisy[sel] == dst)
        assert sel.sum() == half_up(rate * (y == src).sum())
    unmapped = ~np.isin(y, list(mapping))
    assert not flipped[unmapped].any()


def test_asymmetric_fashion_mnist_map_on_synthetic_labels(y10k):
    noisy, info = apply_noise("asymmetric", {}, y10k, K, 0.3, seed=0, dataset="fashion_mnist")
    check_asymmetric(y10k, noisy, 0.3, FMNIST_MAP)
    assert set(np.unique(noisy[info.flip_mask])) == {7, 5, 6, 3}
    t = np.eye(K)
    for src, dst in FMNIST_MAP.items():
        t[src, src], t[src, dst] = 0.7, 0.3
    np.testing.assert_allclose(info.transition, t)


def test_asymmetric_on_real_fashion_mnist(fmnist_labels):
    noisy, info = apply_noise("asymmetric", {}, fmnist_labels, K, 0.4, seed=0, dataset="fashion_mnist")
    check_asymmetric(fmnist_labels, noisy, 0.4, FMNIST_MAP)
    assert info.rate_actual == pytest.approx(4 * 2400 / 60000)
    for src, dst in FMNIST_MAP.items():
        assert info.transition_actual[src, dst] == pytest.approx(0.4)


def test_asymmetric_mnist_and_cifar10_maps(y10k):
    for dataset, mapping in [
        ("mnist", {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}),
        ("cifar10", {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}),
    ]:
        noisy, _ = apply_noise("asymmetric", {}, y10k, K, 0.25, seed=2, dataset=dataset)
        check_asymmetric(y10k, noisy, 0.25, mapping)


def test_asymmetric_cifar100_stays_in_group_of_five():
    y = labels_with_sizes([50] * 100)
    noisy, info = apply_noise("asymmetric", {}, y, 100, 0.4, seed=0, dataset="cifar100")
    flipped = info.flip_mask
    assert np.all(noisy[flipped] // 5 == y[flipped] // 5)
    assert np.all(noisy[flipped] == (y[flipped] // 5) * 5 + (y[flipped] + 1) % 5)
    assert flips_per_class(y, noisy, 100).tolist() == [20] * 100
    assert info.transition[4, 0] == pytest.approx(0.4) and info.transition[99, 95] == pytest.approx(0.4)
    assert info.transition[7, 8] == pytest.approx(0.4) and info.transition[4, 5] == 0.0


def test_asymmetric_unknown_dataset_names_key_and_maps(y10k):
    with pytest.raises(ConfigError) as e:
        apply_noise("asymmetric", {}, y10k, K, 0.2, seed=0, dataset="digits")
    assert e.value.key == "noise.kind"
    for name in ("cifar10", "cifar100", "fashion_mnist", "mnist"):
        assert name in str(e.value)


def test_exact_count_rounds_half_up():
    assert [exact_count(0.5, 5), exact_count(0.3, 10), exact_count(0.4, 881), exact_count(0.45, 923)] == [
        3,
        3,
        352,
        415,
    ]
    assert exact_count(0.0, 7) == 0 and exact_count(0.99, 1) == 1


def test_largest_remainder_hand_cases():
    assert largest_remainder(7, np.array([0.5, 0.3, 0.2])).tolist() == [4, 2, 1]
    assert largest_remainder(10, np.array([0.15, 0.46, 0.39])).tolist() == [1, 5, 4]
    assert largest_remainder(10, np.full(3, 1 / 3)).tolist() == [4, 3, 3]
    assert largest_remainder(0, np.array([0.2, 0.8])).tolist() == [0, 0]


def test_matrix_exact_counts_per_target():
    y = labels_with_sizes([100, 200, 50])
    m = [[0.7, 0.2, 0.1], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]]
    noisy, info = apply_noise("matrix", {"matrix": m}, y, 3, 0.0, seed=0)  # rate is ignored
    counts = np.zeros((3, 3), dtype=int)
    np.add.at(counts, (y, noisy), 1)
    assert counts.tolist() == [[70, 20, 10], [50, 100, 50], [0, 0, 50]]
    np.testing.assert_allclose(info.transition, m)
    assert info.extra["rate_nominal"] == pytest.approx((30 + 100) / 350)
    assert info.rate_actual == pytest.approx(130 / 350)


def test_matrix_rounding_by_largest_remainder():
    y = labels_with_sizes([10, 7])
    m = [[0.25, 0.75], [0.5, 0.5]]  # 2.5 / 7.5 -> tie to the lower index: 3 / 7; 3.5 / 3.5 -> 4 / 3
    noisy, _ = apply_noise("matrix", {"matrix": m}, y, 2, 0.0, seed=4)
    counts = np.zeros((2, 2), dtype=int)
    np.add.at(counts, (y, noisy), 1)
    assert counts.tolist() == [[3, 7], [4, 3]]


@pytest.mark.parametrize(
    "matrix",
    [
        None,
        [[1.0, 0.0]],
        [[0.5, 0.5], [0.2, 0.7]],
        [[1.2, -0.2], [0.0, 1.0]],
        [["a", 1], [0, 1]],
        [[1, 0], [0]],
    ],
)
def test_matrix_validation(matrix):
    with pytest.raises(ConfigError) as e:
        apply_noise("matrix", {"matrix": matrix}, np.array([0, 1, 1]), 2, 0.0, seed=0)
    assert e.value.key == "noise.matrix"


@pytest.fixture(scope="module")
def features(y10k) -> np.ndarray:
    # Class-dependent means plus noise, like flattened images.
    rng = np.random.default_rng(7)
    return rng.normal(size=(K, 20))[y10k] + rng.normal(size=(len(y10k), 20))


def test_instance_probabilities_follow_the_generator(y10k, features):
    probs, q = Instance().probabilities(y10k, K, 0.3, np.random.default_rng(5), features)
    assert probs.shape == (10_000, K)
    assert np.all((q >= 0) & (q <= 1))
    assert abs(q.mean() - 0.3) < 0.01 and abs(q.std() - 0.1) < 0.01
    np.testing.assert_allclose(probs[np.arange(len(y10k)), y10k], 1.0 - q)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert np.all(probs >= 0)
    # Instance-dependent: two samples of one class get different distributions over wrong classes.
    same = np.flatnonzero(y10k == 3)[:2]
    off = [probs[i] / q[i] for i in same]
    assert not np.allclose(off[0], off[1])


def test_instance_labels_drawn_from_those_probabilities(y10k, features):
    noisy, info = apply_noise("instance", {}, y10k, K, 0.3, seed=5, features=features)
    probs, q = Instance().probabilities(y10k, K, 0.3, np.random.default_rng(5), features)
    assert np.all(probs[np.arange(len(y10k)), noisy] > 0)
    assert abs(info.rate_actual - q.mean()) < 0.015
    assert abs(info.rate_actual - 0.3) < 0.02
    np.testing.assert_allclose(info.transition, info.transition_actual)
    assert info.extra["flip_rate_mean"] == pytest.approx(q.mean())


def test_instance_rate_zero_is_clean_and_errors(y10k, features):
    noisy, _ = apply_noise("instance", {}, y10k, K, 0.0, seed=0, features=features)
    assert np.array_equal(noisy, y10k)
    with pytest.raises(ConfigError) as e:
        apply_noise("instance", {}, y10k, K, 0.2, seed=0, features=None)
    assert e.value.key == "noise.kind"
    with pytest.raises(ConfigError) as e:
        apply_noise("instance", {"std": -0.1}, y10k, K, 0.2, seed=0, features=features)
    assert e.value.key == "noise.std"


KINDS = [("symmetric", {}), ("symmetric", {"variant": "inclusive"}), ("pairflip", {}), ("asymmetric", {})]
KINDS += [("instance", {"std": 0.05}), ("matrix", {"matrix": (0.5 * np.eye(K) + 0.05).tolist()})]


@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_same_seed_same_labels_other_seed_other_labels(kind, params, y10k, features):
    run = lambda s: apply_noise(kind, params, y10k, K, 0.3, s, features, "fashion_mnist")[0]
    assert np.array_equal(run(11), run(11))
    assert not np.array_equal(run(11), run(12))


@pytest.mark.parametrize(("kind", "params"), KINDS + [("none", {})])
def test_noise_info_is_consistent(kind, params, y10k, features):
    noisy, info = apply_noise(kind, params, y10k, K, 0.3, 0, features, "fashion_mnist")
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < K
    assert np.array_equal(info.flip_mask, noisy != y10k)
    assert info.rate_actual == pytest.approx((noisy != y10k).mean())
    assert info.kind == kind and info.rate == 0.3 and info.seed == 0
    np.testing.assert_allclose(info.transition.sum(1), 1.0)
    np.testing.assert_allclose(info.transition_actual, empirical_transition(y10k, noisy, K))
    assert set(info.summary()) >= {"kind", "rate", "rate_actual", "transition"}


def test_none_is_identity(y10k):
    noisy, info = apply_noise("none", {}, y10k, K, 0.5, seed=0)
    assert np.array_equal(noisy, y10k) and info.rate_actual == 0.0
    np.testing.assert_array_equal(info.transition, np.eye(K))


def test_empirical_transition_hand_case():
    t = empirical_transition(np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 0, 1, 1, 0]), 3)
    np.testing.assert_allclose(t, [[0.75, 0.25, 0], [0.5, 0.5, 0], [0, 0, 1]])


@pytest.mark.parametrize(
    ("kind", "params", "rate", "seed", "key"),
    [
        ("symmetric", {}, 1.0, 0, "noise.rate"),
        ("symmetric", {}, -0.1, 0, "noise.rate"),
        ("symmetric", {}, "0.2", 0, "noise.rate"),
        ("symmetric", {"variant": "both"}, 0.2, 0, "noise.variant"),
        ("symmetric", {"std": 0.1}, 0.2, 0, "noise.std"),
        ("pairflip", {"variant": "exclusive"}, 0.2, 0, "noise.variant"),
        ("symmetrc", {}, 0.2, 0, "noise.kind"),
        ("symmetric", {}, 0.2, "a", "noise.seed"),
    ],
)
def test_bad_params_name_the_key(kind, params, rate, seed, key, y10k):
    with pytest.raises(ConfigError) as e:
        apply_noise(kind, params, y10k, K, rate, seed)
    assert e.value.key == key and key in str(e.value)
