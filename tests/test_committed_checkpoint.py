"""The committed classroom checkpoint loads and reproduces its recorded test accuracy on the embedded dataset."""
from pathlib import Path

import pytest

from minicct import model as M
from minicct.datasets import load
from minicct.io.npz_checkpoint import load_checkpoint
from minicct.train.loop import evaluate

CKPT = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "classroom.npz"


def test_classroom_checkpoint_reproduces_its_recorded_accuracy():
    params, cfg, meta, _ = load_checkpoint(CKPT)
    assert cfg == M.get_config("classroom")
    assert meta["dataset"] == "embedded" and "command" in meta and "minicct_version" in meta
    data = load("embedded", seed=meta["data_seed"], difficulty=meta["data_difficulty"])
    _, acc = evaluate(params, cfg, data.x_test, data.y_test, data.mean, data.std)
    # float32 sums in another order (another BLAS, thread count) can flip a borderline prediction or two
    assert acc == pytest.approx(meta["test_acc"], abs=2 / len(data.y_test))
    assert 0.60 <= acc <= 0.95
