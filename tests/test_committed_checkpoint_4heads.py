"""The committed 4-head classroom checkpoint loads and reproduces its recorded test accuracy."""
from pathlib import Path

import pytest

from minicct import model as M
from minicct.datasets import load
from minicct.io.npz_checkpoint import load_checkpoint
from minicct.train.loop import evaluate

CKPT = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "classroom_4heads.npz"


def test_4head_checkpoint_reproduces_its_recorded_accuracy():
    params, cfg, meta, _ = load_checkpoint(CKPT)
    assert cfg == M.get_config("classroom", num_heads=4) and cfg.head_dim == 16
    assert "--heads 4" in meta["command"] and meta["seed"] == 0
    data = load("embedded", seed=meta["data_seed"], difficulty=meta["data_difficulty"])
    _, acc = evaluate(params, cfg, data.x_test, data.y_test, data.mean, data.std)
    assert acc == pytest.approx(meta["test_acc"], abs=2 / len(data.y_test))
    assert 0.60 <= acc <= 0.95
