"""Throughput: robustlearn's training epoch against a raw PyTorch loop on the same net, data and device.

Both sides train the same registered model on the same device-resident tensors, with the same batch size,
optimiser, precision (bf16 autocast on GPU) and a fresh permutation per epoch; the raw loop is the fastest
plain loop we know how to write (no Lightning, no metrics, no logging). Times are training only: robustlearn's
epoch is timed from `on_train_epoch_start` to the start of validation. The first epoch of each is a warm-up and
is not counted; the raw loop runs before and after ours. Prints seconds per epoch and the ratio ours / raw
(1.00 = no overhead).

    python benchmarks/throughput.py                          # Fashion-MNIST, cnn, 3 timed epochs
    python benchmarks/throughput.py --subset 5000 --epochs 2 # quick check
    python benchmarks/throughput.py --compile                # both sides compiled
    python benchmarks/throughput.py model.name=resnet18 --config configs/experiments/...
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustlearn.config import load_config  # noqa: E402
from robustlearn.data.datamodule import RobustDataModule  # noqa: E402
from robustlearn.models import build_model  # noqa: E402
from robustlearn.runner import fit  # noqa: E402
from robustlearn.schema import ModelCfg, entry_params  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(pl.Callback):
    """Training time of each epoch, validation excluded."""

    def __init__(self):
        self.times: list[float] = []
        self._t = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        _sync(pl_module.device)
        self._t = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.training or trainer.state.fn == "fit":
            _sync(pl_module.device)
            if self._t:
                self.times.append(time.perf_counter() - self._t)
                self._t = 0.0


def raw_loop(cfg, dm: RobustDataModule, device: torch.device, epochs: int, compiled: bool = False) -> list[float]:
    torch.manual_seed(cfg.seed)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as Lightning's benchmark=True on GPU
    params = entry_params(cfg.model, ModelCfg)
    net = build_model(cfg.model.name, params, dm.input_shape, dm.num_classes).to(device)
    if dm.splits["train"]["x"].ndim == 4:
        net = net.to(memory_format=torch.channels_last)
    if compiled:  # as robustlearn compiles: the network, with one batch shape (the last partial batch dropped)
        net = torch.compile(net, mode=cfg.trainer.compile_mode)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    x = dm.splits["train"]["x"].to(device)
    y = dm.splits["train"]["y"].to(device)
    bs = cfg.data.batch_size
    bf16 = device.type == "cuda"
    times = []
    for _ in range(epochs):
        _sync(device)
        t = time.perf_counter()
        net.train()
        order = torch.randperm(len(y), device=device)
        end = len(y) - len(y) % bs if compiled and len(y) >= bs else len(y)
        for start in range(0, end, bs):
            idx = order[start : start + bs]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def measure(config: str | Path, overrides: list[str], epochs: int = 4, compiled: bool = False) -> dict:
    """Seconds per training epoch of robustlearn and of the raw loop (run before and after ours), and the ratio."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    over = [f"trainer.epochs={epochs}", "scheduler.name=none", "data.crop_padding=0", "data.hflip=false",
            "trainer.deterministic=false", "output.save_checkpoint=false", "logger.wandb.mode=disabled",
            f"trainer.compile={str(compiled).lower()}", *overrides]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [*over, f"output.root={tmp}"])
        dm = RobustDataModule(cfg).load()
        # raw, ours, raw again: machine drift affects both sides alike.
        raw = raw_loop(cfg, dm, device, epochs, compiled)
        timer = EpochTimer()
        result = fit(cfg, quiet=True, callbacks=[timer])
        raw2 = raw_loop(cfg, dm, device, epochs, compiled)
    ours = timer.times
    ours_s = statistics.median(ours[1:] or ours)
    raw_s = statistics.median((raw[1:] + raw2[1:]) or raw)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return {
        "date": datetime.date.today().isoformat(), "device": name, "model": cfg.model.name,
        "dataset": cfg.data.name, "train_size": dm.train_size,
        "batch_size": cfg.data.batch_size, "precision": "bf16-mixed" if device.type == "cuda" else "32-true",
        "compiled": compiled, "ours_s_per_epoch": ours_s, "raw_s_per_epoch": raw_s, "ratio": ours_s / raw_s,
        "ours_epochs": ours, "raw_epochs": raw + raw2, "status": result["status"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs/experiments/fmnist_ce.yaml"))
    p.add_argument("--epochs", type=int, default=4, help="epochs per side; the first is a warm-up")
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="both sides torch.compile the network")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    over = [*a.overrides, *([f"data.subset={a.subset}"] if a.subset else [])]
    out = measure(a.config, over, a.epochs, a.compile)
    print(f"device {out['device']}; {out['model']} on {out['dataset']} ({out['train_size']} samples, batch "
          f"{out['batch_size']}{', compiled' if a.compile else ''})")
    print(f"robustlearn {out['ours_s_per_epoch']:.3f} s/epoch   raw PyTorch {out['raw_s_per_epoch']:.3f} s/epoch   "
          f"ratio {out['ratio']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
