"""train.step.train_step (forward -> loss -> backward -> optimizer) against the four lines written out, its
non-finite guards, and Ctrl-C on the last step of an epoch (a real SIGINT in a subprocess), then resume."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minicct import model as M
from minicct.layers.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minicct.train.loop import TrainConfig, train
from minicct.train.optim import SGD, AdamW
from minicct.train.step import train_step

HERE = Path(__file__).resolve().parent
TINY = M.CCTConfig(img_size=12, n_conv_layers=2, kernel_size=3, in_planes=4, embedding_dim=8, num_heads=2,
                   num_layers=2, mlp_ratio=2.0, num_classes=5, attention_dropout=0.1, stochastic_depth=0.1)


def test_train_step_equals_the_four_lines():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    p1, p2 = M.init_params(TINY, 1), M.init_params(TINY, 1)
    o1, o2 = AdamW(1e-3, weight_decay=0.05), AdamW(1e-3, weight_decay=0.05)
    for it in range(3):
        # one worker: exactly the four lines (several workers: tests/test_parallel.py, to float32 rounding)
        out = train_step(p1, o1, x, y, TINY, np.random.default_rng(it), lr=2e-3, smoothing=0.1)
        # the same step, written out
        logits, cache = M.forward(p2, x, TINY, train=True, rng=np.random.default_rng(it))
        loss, lc = softmax_cross_entropy_forward(logits, y, 0.1)
        o2.step(p2, M.backward(softmax_cross_entropy_backward(1.0, lc), cache), 2e-3)
        assert out.loss == pytest.approx(float(loss), rel=1e-6)
        np.testing.assert_array_equal(out.logits, logits)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_train_step_stops_on_non_finite_loss_or_parameters():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 5, 4)
    p = M.init_params(TINY, 0)
    p["classifier.fc.weight"][0, 0] = np.nan                        # logits -> NaN, loss NaN
    with pytest.raises(FloatingPointError, match=r"loss became .* at epoch 2, step 7; lower the learning rate"):
        train_step(p, SGD(0.1), x, y, TINY, np.random.default_rng(0), step_name="epoch 2, step 7")

    class Exploding(SGD):
        def step(self, params, grads, lr=None):
            super().step(params, grads, lr)
            params["classifier.blocks.1.linear1.weight"][0, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"classifier.blocks.1.linear1.weight.*NaN or inf at step 3"):
        train_step(M.init_params(TINY, 0), Exploding(0.1), x, y, TINY, np.random.default_rng(0), lr=0.1,
                   step_name="step 3")


CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
sys.path.insert(0, {root!r})
import minicct.train.loop as loop
from test_train import CFG, _toy_data
from minicct.train.loop import TrainConfig, train

real_update = loop._Progress.update
calls = []

def update_then_ctrl_c(self, text):            # called once after every step
    real_update(self, text)
    calls.append(1)
    if len(calls) == 2:                        # after the last (only) step of epoch 2: Ctrl-C arrives here
        os.kill(os.getpid(), signal.SIGINT)

loop._Progress.update = update_then_ctrl_c
tc = TrainConfig(**{tc!r})
try:
    train(CFG, _toy_data(), tc, checkpoint={ck!r}, quiet=True)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


def test_ctrl_c_on_the_last_step_of_an_epoch_resumes(tmp_path):
    sys.path.insert(0, str(HERE))
    from test_train import CFG, _toy_data
    data = _toy_data()
    tc = dict(epochs=3, batch_size=len(data.y_train), lr=3e-3, warmup_epochs=0.5, seed=4)   # 1 step per epoch
    ck = tmp_path / "ck.npz"
    child = CHILD.format(tests=str(HERE), root=str(HERE.parent), tc=tc, ck=str(ck))
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 130, r.stderr[-2000:]
    assert ck.exists()
    params, resumed, _ = train(CFG, data, TrainConfig(**tc), checkpoint=ck, resume=ck, quiet=True)
    full_params, full, _ = train(CFG, data, TrainConfig(**tc), quiet=True)
    assert resumed.epoch == full.epoch == [1, 2, 3]
    for name in ("step_losses", "train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert getattr(resumed, name) == getattr(full, name), name
    for k in params:
        np.testing.assert_array_equal(params[k], full_params[k])


def test_retain_freed_memory_opt_out_and_glibc(monkeypatch):
    import platform
    from minicct import memory
    monkeypatch.setattr(memory, "_STATE", {"done": False, "active": False})
    monkeypatch.setenv("MINICCT_RETAIN_MEMORY", "0")
    assert memory.retain_freed_memory() is False                    # opted out: nothing set
    assert memory.retain_freed_memory() is False                    # and decided once per process
    monkeypatch.setattr(memory, "_STATE", {"done": False, "active": False})
    monkeypatch.delenv("MINICCT_RETAIN_MEMORY")
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert memory.retain_freed_memory() is glibc
