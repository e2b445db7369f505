"""The README's main job, shortened: it must train and write its plot."""

import importlib.util
import os

import pytest

pytest.importorskip("matplotlib")
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "train_mlp.py")


def load():
    spec = importlib.util.spec_from_file_location("train_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("optimizer, lr", [("adam", 1e-2), ("sgd", 0.2)])
def test_main_job_trains_and_writes_the_loss_plot(tmp_path, optimizer, lr):
    accuracy = load().main(["--optimizer", optimizer, "--lr", str(lr), "--steps", "400", "--out", str(tmp_path)])
    assert accuracy > 0.9
    assert (tmp_path / "loss.png").stat().st_size > 10_000


def test_main_job_checkpoint_round_trip_and_resume(tmp_path, capsys):
    module = load()
    module.main(["--steps", "200", "--out", str(tmp_path)])
    assert "reloaded bit-exact: True" in capsys.readouterr().out
    accuracy = module.main(["--resume", "--steps", "200", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "resumed from" in out and "reloaded bit-exact: True" in out
    assert accuracy > 0.9
