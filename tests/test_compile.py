"""trainer.compile: the network runs through torch.compile (here on CPU), training batches have one shape, and a
strategy that cannot run compiled makes the run fall back to eager with a message."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from robustlearn.registry import STRATEGIES
from robustlearn.runner import fit
from robustlearn.strategies.base import Strategy
from tests.protocol_helpers import Recorder, smoke


class _Shapes(Recorder):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.sizes = getattr(self, "sizes", set()) | {len(outputs["batch"]["index"])}


def test_a_compiled_run_completes_with_static_batches(tmp_path):
    rec = _Shapes()
    result = fit(smoke(tmp_path, "trainer.compile=true", "trainer.epochs=1", "strategies=[{name: gce}]"), quiet=True,
                 callbacks=[rec])
    assert result["status"] == "completed" and result["compiled"] is True
    assert type(rec.module.net).__name__ == "OptimizedModule"
    assert rec.steps == [1800 // 64] and rec.sizes == {64}  # the last partial batch (8) is dropped
    assert result["test_acc_last"] > 0.5


@STRATEGIES.register("test_not_compilable")
class _NotCompilable(Strategy):
    compilable = False

    @dataclass
    class Params:
        pass


def test_a_strategy_that_cannot_compile_falls_back_to_eager(tmp_path, capsys):
    rec = Recorder()
    cfg = smoke(tmp_path, "trainer.compile=true", "trainer.epochs=1", "strategies=[{name: test_not_compilable}]")
    result = fit(cfg, quiet=True, callbacks=[rec])
    assert result["status"] == "completed" and result["compiled"] is False
    assert "test_not_compilable cannot run with a compiled network; this run trains eager" in capsys.readouterr().err
    assert type(rec.module.net).__name__ != "OptimizedModule" and rec.steps == [29]


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_compile_mode_is_a_checked_key(mode):
    from robustlearn.config import load_config
    from robustlearn.errors import ConfigError
    from tests.conftest import SMOKE

    assert load_config(SMOKE, [f"trainer.compile_mode={mode}"]).trainer.compile_mode == mode
    with pytest.raises(ConfigError, match="trainer.compile_mode"):
        load_config(SMOKE, ["trainer.compile_mode=fast"])
