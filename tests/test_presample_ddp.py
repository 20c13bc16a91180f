"""Presampling under DDP (two CPU processes, gloo): one common candidate stream, each rank scoring its share, the same
gathered scores on every rank, and every rank training on its own part of one common draw."""

from __future__ import annotations

import pytest
import torch

from tests.protocol_helpers import fit_on_two_cpu_ranks


def test_ranks_share_one_candidate_stream_and_its_scores(tmp_path):
    dump = fit_on_two_cpu_ranks("ddp_presample_fit.py", tmp_path, "trainer.epochs=1",
                                "strategies=[{name: presample, presample: 3, tau_th: 0, score: loss, switch: step}]")
    rank0, rank1 = (torch.load(dump / f"rank{r}.pt") for r in (0, 1))
    assert len(rank0) == len(rank1) > 10
    for step, (a, c) in enumerate(zip(rank0, rank1, strict=True)):
        n = len(a["candidates"]) // 2  # each rank's share of the common draw
        assert torch.equal(a["candidates"], c["candidates"])  # one stream on both ranks
        assert torch.equal(a["scores"], c["scores"])  # the same gathered scores
        # the gathered scores are the scores of every candidate: rank 1's share was scored by rank 1 correctly
        torch.testing.assert_close(a["scores"], a["every"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c["scores"], c["every"], rtol=1e-5, atol=1e-6)
        assert not torch.equal(a["candidates"][:n], a["candidates"][n:])  # the shares are different samples
        if step == 0:  # the smoothed tau starts at 0: the first step trains on the loader's batch
            assert torch.equal(a["weight"], torch.ones_like(a["weight"]))
            continue
        # each rank trains on its own picks from the common candidates, weighted 1 / (2 n p)
        assert torch.equal(a["trained"], a["candidates"][a["pick"]])
        assert torch.equal(c["trained"], c["candidates"][c["pick"]])
        p = a["scores"] / a["scores"].sum()
        torch.testing.assert_close(a["weight"], 1.0 / (2 * n * p[a["pick"]]))
        torch.testing.assert_close(c["weight"], 1.0 / (2 * n * p[c["pick"]]))
    assert any(not torch.equal(a["pick"], c["pick"]) for a, c in zip(rank0, rank1))  # different parts of the draw


@pytest.mark.slow  # two processes for ~20 s; the candidate-stream test above covers the DDP path in the default tier
def test_the_epoch_switch_takes_the_same_decision_on_every_rank(tmp_path):
    dump = fit_on_two_cpu_ranks("ddp_presample_fit.py", tmp_path, "trainer.epochs=2",
                                "strategies=[{name: presample, tau_th: 0, score: upper_bound}]")
    rank0, rank1 = (torch.load(dump / f"rank{r}.pt") for r in (0, 1))
    assert len(rank0) == len(rank1) > 10
    for a, c in zip(rank0, rank1, strict=True):
        # τ̄ from the scores of both ranks' batches (off epoch) or of the common candidates (on epoch): equal
        torch.testing.assert_close(a["tau"], c["tau"])
        assert ("candidates" in a) == ("candidates" in c) == (a["epoch"] == 1)  # off, then on, on both ranks
    first = [a for a in rank0 if a["epoch"] == 0]
    assert not torch.equal(first[0]["trained"], rank1[0]["trained"])  # off: each rank its own loader batch
