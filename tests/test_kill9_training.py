"""SIGKILL during a real training run (not only during a loop of saves, tests/fault_cases.py): the checkpoint
on disk is always loadable, no temporary file is left once the resumed run saves again, and resuming from it
gives exactly the trajectory and parameters of a run that was never interrupted."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from minicct.io.npz_checkpoint import load_checkpoint
from minicct.train.loop import TrainConfig, train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_train import CFG, _toy_data  # noqa: E402

CHILD = """
import sys
sys.path.insert(0, {tests!r})
sys.path.insert(0, {root!r})
from test_train import CFG, _toy_data
from minicct.train.loop import TrainConfig, train
train(CFG, _toy_data(), TrainConfig(**{tc!r}), checkpoint={ck!r}, quiet=True)
"""


def test_sigkill_mid_training_then_resume_gives_the_uninterrupted_run(tmp_path):
    tc = dict(epochs=30, batch_size=20, lr=3e-3, warmup_epochs=0.5, seed=5)    # 6 steps per epoch
    ck = tmp_path / "run" / "ck.npz"
    ck.parent.mkdir()
    child = CHILD.format(tests=str(HERE), root=str(HERE.parent), tc=tc, ck=str(ck))
    proc = subprocess.Popen([sys.executable, "-c", child], stderr=subprocess.PIPE)   # same settings as here
    try:
        deadline = time.monotonic() + 120
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)                               # the first epoch's checkpoint
        time.sleep(float(np.random.default_rng(0).uniform(0.05, 0.4)))   # then somewhere inside a later epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended on its own before the kill: {err[-2000:]!r}"
    _, _, meta, _ = load_checkpoint(ck)                    # whatever moment it died at, the file is whole
    done = meta["train_state"]["history"]["epoch"]
    assert 1 <= len(done) < tc["epochs"], done             # killed after the first epoch, before the last

    params, resumed, _ = train(CFG, _toy_data(), TrainConfig(**tc), checkpoint=ck, resume=ck, quiet=True)
    full_params, full, _ = train(CFG, _toy_data(), TrainConfig(**tc), quiet=True)
    for name in ("epoch", "step_losses", "train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert getattr(resumed, name) == getattr(full, name), name
    for k in params:
        np.testing.assert_array_equal(params[k], full_params[k])
    assert [p.name for p in ck.parent.iterdir()] == ["ck.npz"]      # no temporary left behind
