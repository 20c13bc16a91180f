"""Bad input: exit code 2, one paragraph naming the key or file, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robustlearn.cli import main
from tests.conftest import SMOKE

# (overrides, text the message must contain)
BAD_OVERRIDES = [
    (["trainer.epoch=5"], "trainer.epoch"),  # unknown key, with a suggestion checked below
    (["noise.rate=1.0"], "noise.rate"),
    (["noise.rate=-0.1"], "noise.rate"),
    (["optim.lr=0"], "optim.lr"),
    (["trainer.epochs=0"], "trainer.epochs"),
    (["trainer.epochs=five"], "trainer.epochs"),
    (["data.name=fmnist"], "data.name"),
    (["model.name=resnet"], "model.name"),
    (["optim.name=rmsprop"], "optim.name"),
    (["strategies=[{name: no_such_method}]"], "strategies[0].name"),
    (["strategies=5"], "strategies"),
    (["noise.kind=asymmetric", "noise.rate=0.2"], "noise.kind"),
    (["data.val_fraction=1.0"], "data.val_fraction"),
    (["data.subset=0"], "data.subset"),
    (["model.dropout=1.5"], "model.dropout"),
    (["noise.kind=matrix", "noise.matrix=[[1.0, 0.0], [0.5, 0.5]]"], "noise.matrix"),
    (["noise.rate"], "noise.rate"),  # an override without '='
    (["experiment=${nope}"], "nope"),
    (["resume=true"], "resume"),  # nothing to resume
    (["data.batch_size=-1"], "data.batch_size"),
    (["logger.wandb.mode=sometimes"], "logger.wandb.mode"),
]


def _run(argv, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.err


def _assert_clean_failure(rc, err, needle, out_root):
    assert rc == 2, err
    assert "Traceback" not in err
    assert needle in err, err
    assert "\n\n" not in err.strip(), "the message must be one paragraph"
    assert not (out_root / "results.sqlite").exists()
    assert not any(out_root.iterdir()) if out_root.exists() else True


@pytest.mark.parametrize("overrides,needle", BAD_OVERRIDES, ids=[" ".join(o) for o, _ in BAD_OVERRIDES])
def test_bad_override(overrides, needle, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = _run(["fit", str(SMOKE), f"output.root={out}", *overrides, "--quiet"], capsys)
    _assert_clean_failure(rc, err, needle, out)


def test_missing_data_files(tmp_path, capsys):
    out = tmp_path / "out"
    cfg = SMOKE.parents[1] / "experiments" / "fmnist_ce.yaml"
    argv = [
        "fit",
        str(cfg),
        f"output.root={out}",
        "data.name=mnist",
        f"data.root={tmp_path / 'empty'}",
        "data.download=false",
        "--quiet",
    ]
    rc, err = _run(argv, capsys)
    _assert_clean_failure(rc, err, "mnist", out)
    assert "train-images-idx3-ubyte" in err or str(tmp_path / "empty") in err


def test_unknown_key_suggests_closest(tmp_path, capsys):
    rc, err = _run(["config", str(SMOKE), "trainer.epoch=5"], capsys)
    assert rc == 2 and "Did you mean 'epochs'?" in err


def test_unknown_name_lists_allowed(capsys):
    rc, err = _run(["config", str(SMOKE), "data.name=fmnist"], capsys)
    assert rc == 2 and "fashion_mnist" in err and "Allowed:" in err


@pytest.mark.parametrize(
    "content,needle",
    [
        ("data: {name: synthetic\n", "line"),  # YAML syntax error
        ("- a\n- b\n", "mapping"),  # not a mapping
        ("defaults: [missing_base.yaml]\n", "missing_base.yaml"),  # include not found
        ("defaults: [self.yaml]\n", "cycle"),  # include cycle
    ],
)
def test_bad_files(content, needle, tmp_path, capsys):
    cfg = tmp_path / "self.yaml"
    cfg.write_text(content)
    out = tmp_path / "out"
    rc, err = _run(["fit", str(cfg), f"output.root={out}"], capsys)
    _assert_clean_failure(rc, err, needle, out)
    assert str(cfg.name) in err or needle in err


def test_missing_config_file(tmp_path, capsys):
    rc, err = _run(["fit", str(tmp_path / "nope.yaml")], capsys)
    assert rc == 2 and "nope.yaml" in err


def test_exit_code_from_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "robustlearn", "fit", str(SMOKE), "noise.rate=2", f"output.root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "noise.rate" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results.sqlite").exists()
