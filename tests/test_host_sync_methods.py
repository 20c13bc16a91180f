"""No host sync in the step of the noisy-label methods with per-sample or learnt state, or with stages: each runs a
few epochs on small noisy data with `training_step` and its strategies' step hooks under the guard (every stage of
a multi-stage method is reached)."""

from __future__ import annotations

import pytest

from robustlearn.runner import fit
from tests.protocol_helpers import smoke
from tests.sync_guard import _WatchStrategies

ENTRIES = {
    "peer_loss": "{name: peer_loss, warmup_epochs: 0}",
    "cores2": "{name: cores2}",
    "cal": "{name: cal, stage1_epochs: 1}",
    "t_revision": "{name: t_revision, warmup_epochs: 1}",
    "volminnet": "{name: volminnet}",
    "sop": "{name: sop}",
    "sop_plus": "{name: sop_plus}",
    "elr_plus": "{name: elr_plus}",
    "pes": "{name: pes, t1: 1, t2: 1, t3: 1}",
    "pes_semi": "{name: pes_semi}",
    "mixup": "{name: mixup}",
    "gjs": "{name: gjs}",
}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_step_makes_no_host_sync(tmp_path, guarded_step, name):
    epochs = 3
    result = fit(smoke(tmp_path, f"strategies=[{ENTRIES[name]}]", f"trainer.epochs={epochs}", "noise.rate=0.4",
                       "data.n_train=300", "output.save_checkpoint=false"), quiet=True, callbacks=[_WatchStrategies()])
    assert result["status"] == "completed", result["error"]
