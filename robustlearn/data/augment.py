"""On-device augmentation of a whole batch: random crop with zero padding and random horizontal flip."""

from __future__ import annotations

import torch
from torch import Tensor


def random_crop_flip(x: Tensor, padding: int, hflip: bool, generator: torch.Generator) -> Tensor:
    """Random-crop (zero padding) and random-flip a batch `(B, C, H, W)` on its own device, in one gather.

    The standard CIFAR augmentation (He et al. 2016, Sec. 4.2: pad 4, random 32x32 crop, horizontal flip),
    done for the whole batch at once. For sample b, with offsets `dy_b, dx_b` uniform in
    `{0, ..., 2 * padding}` and `f_b` uniform in `{0, 1}` (drawn only when `hflip`):

        out[b, c, i, j] = xpad[b, c, i + dy_b, j' + dx_b],   j' = W - 1 - j if f_b else j,

    where `xpad` is `x` zero-padded by `padding` on every side; that is, the H x W window at (dy_b, dx_b) of
    the padded image, mirrored left-right when f_b = 1. No padded copy is made: the source pixel
    `x[b, c, i + dy_b - padding, j' + dx_b - padding]` is gathered, and zero is written where it falls
    outside.

    Random numbers are drawn from `generator`, which must live on `x.device`, in this order:
    `torch.randint(0, 2 * padding + 1, (B, 2))` (row offset, column offset; only when padding > 0), then
    `torch.randint(0, 2, (B,))` (flip; only when `hflip`). The same generator state gives the same output.
    `padding == 0` and `hflip == False` returns `x` itself. The dtype is kept, and so is the memory format
    (contiguous or channels_last).
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects a batch (B, C, H, W), got shape {tuple(x.shape)}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    if padding == 0 and not hflip:
        return x
    b, _, h, w = x.shape
    device = x.device
    if padding > 0:
        offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator, device=device) - padding
    else:
        offsets = torch.zeros(b, 2, dtype=torch.long, device=device)
    cols = torch.arange(w, device=device).expand(b, w)
    if hflip:
        flip = torch.randint(0, 2, (b,), generator=generator, device=device).bool()
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    rows = torch.arange(h, device=device)[None, :] + offsets[:, :1]  # (B, H) source rows
    cols = cols + offsets[:, 1:]  # (B, W) source columns
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    batch = torch.arange(b, device=device)[:, None, None]
    # Advanced indices around a slice put their dimensions first: the result is (B, H, W, C).
    gathered = x[batch, :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    out = torch.where(inside[..., None], gathered, torch.zeros((), dtype=x.dtype, device=device))
    out = out.permute(0, 3, 1, 2)  # (B, C, H, W) view with channels_last strides
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
