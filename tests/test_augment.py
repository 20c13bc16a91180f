"""random_crop_flip: shapes, identity, hand-computed windows, flip share, determinism, memory format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlearn.data.augment import random_crop_flip


def _images(b: int, c: int = 3, h: int = 6, w: int = 5) -> torch.Tensor:
    """Images whose every value is distinct and non-zero, so any window identifies its offset."""
    return torch.arange(1, b * c * h * w + 1, dtype=torch.float32).reshape(b, c, h, w)


def _window(img: np.ndarray, padding: int, dy: int, dx: int, flip: bool) -> np.ndarray:
    """The H x W window at (dy, dx) of the zero-padded image, mirrored when `flip`, computed with numpy."""
    c, h, w = img.shape
    padded = np.zeros((c, h + 2 * padding, w + 2 * padding), dtype=img.dtype)
    padded[:, padding : padding + h, padding : padding + w] = img
    win = padded[:, dy : dy + h, dx : dx + w]
    return win[:, :, ::-1] if flip else win


def test_shapes_and_dtype():
    x = _images(7)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, 2, True, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    u8 = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert random_crop_flip(u8, 4, True, g).dtype == torch.uint8


def test_padding_zero_without_flip_is_identity():
    x = _images(5)
    assert torch.equal(random_crop_flip(x, 0, False, torch.Generator().manual_seed(0)), x)


def test_hand_written_windows_of_a_3x3_image():
    img = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]).reshape(1, 1, 3, 3)
    allowed = {  # padding 1: the nine 3x3 windows of the zero-padded 5x5 image, written out by hand
        (0, 0): [[0, 0, 0], [0, 1, 2], [0, 4, 5]],
        (0, 1): [[0, 0, 0], [1, 2, 3], [4, 5, 6]],
        (0, 2): [[0, 0, 0], [2, 3, 0], [5, 6, 0]],
        (1, 0): [[0, 1, 2], [0, 4, 5], [0, 7, 8]],
        (1, 1): [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
        (1, 2): [[2, 3, 0], [5, 6, 0], [8, 9, 0]],
        (2, 0): [[0, 4, 5], [0, 7, 8], [0, 0, 0]],
        (2, 1): [[4, 5, 6], [7, 8, 9], [0, 0, 0]],
        (2, 2): [[5, 6, 0], [8, 9, 0], [0, 0, 0]],
    }
    out = random_crop_flip(img.expand(400, 1, 3, 3).contiguous(), 1, False, torch.Generator().manual_seed(3))
    seen = set()
    for sample in out[:, 0].tolist():
        match = [k for k, v in allowed.items() if v == sample]
        assert len(match) == 1, sample
        seen.add(match[0])
    assert seen == set(allowed)  # 400 draws hit every one of the 9 offsets


def test_crop_and_flip_equal_the_numpy_window_for_the_documented_draws():
    padding, x = 2, _images(64)
    g = torch.Generator().manual_seed(11)
    replay = torch.Generator().manual_seed(11)
    out = random_crop_flip(x, padding, True, g)
    offsets = torch.randint(0, 2 * padding + 1, (64, 2), generator=replay)
    flips = torch.randint(0, 2, (64,), generator=replay).bool()
    assert 0 < int(flips.sum()) < 64
    for b in range(64):
        dy, dx = offsets[b].tolist()
        expected = _window(x[b].numpy(), padding, dy, dx, bool(flips[b]))
        np.testing.assert_array_equal(out[b].numpy(), expected)


def test_each_output_is_exactly_one_window_and_offsets_are_uniform():
    padding, n = 2, 2000
    x = _images(n, c=1, h=4, w=4)
    out = random_crop_flip(x, padding, False, torch.Generator().manual_seed(5))
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (4, 4), axis=(2, 3))  # (n, 1, 5, 5, 4, 4)
    matches = np.all(windows == out.numpy()[:, :, None, None], axis=(1, 4, 5))  # (n, 5, 5)
    assert np.all(matches.sum(axis=(1, 2)) == 1)  # exactly one window per sample
    counts = matches.sum(axis=0)
    expected = n / counts.size  # 80 per cell; binomial sd ~ 8.8
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_flip_share_is_one_half():
    n = 10_000
    x = torch.arange(4, dtype=torch.float32).repeat(n, 1, 1, 1)  # (n, 1, 1, 4): ramp along W
    out = random_crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    flipped = torch.all(out == x.flip(-1), dim=(1, 2, 3))
    kept = torch.all(out == x, dim=(1, 2, 3))
    assert torch.all(flipped ^ kept)
    share = flipped.float().mean().item()
    assert abs(share - 0.5) < 0.02  # sd 0.005


def test_same_seed_same_output_and_other_seed_differs():
    x = torch.randn(32, 3, 8, 8)
    a = random_crop_flip(x, 4, True, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, 4, True, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, 4, True, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_is_kept_and_values_agree(channels):
    x = torch.randn(16, channels, 8, 8)
    xl = x.contiguous(memory_format=torch.channels_last)
    a = random_crop_flip(x, 3, True, torch.Generator().manual_seed(1))
    b = random_crop_flip(xl, 3, True, torch.Generator().manual_seed(1))
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert a.is_contiguous()
    assert torch.equal(a, b)


def test_bad_arguments():
    g = torch.Generator()
    with pytest.raises(ValueError, match="B, C, H, W"):
        random_crop_flip(torch.zeros(3, 8, 8), 1, False, g)
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(torch.zeros(1, 3, 8, 8), -1, False, g)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_the_batch():
    x = torch.randn(64, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    a = random_crop_flip(x, 4, True, torch.Generator(device="cuda").manual_seed(0))
    b = random_crop_flip(x, 4, True, torch.Generator(device="cuda").manual_seed(0))
    assert a.device == x.device and torch.equal(a, b)
    assert a.is_contiguous(memory_format=torch.channels_last)
