"""Training loop, optimisers, schedule, augmentation and checkpoints."""
import math

import numpy as np
import pytest

from minicct import model as M
from minicct.datasets.base import Dataset, channel_stats
from minicct.train import augment
from minicct.io.npz_checkpoint import load_checkpoint, save_checkpoint
from minicct.train.loop import TrainConfig, train
from minicct.train.optim import SGD, AdamW, cosine_lr, decay_mask

CFG = M.CCTConfig(img_size=16, n_conv_layers=2, kernel_size=3, in_planes=4, embedding_dim=16, num_heads=2,
                  num_layers=2, mlp_ratio=1.0, num_classes=3, attention_dropout=0.1, stochastic_depth=0.1)


def _toy_data(n_per_class=40, seed=0):
    """Three classes of 16x16 images: a bright square in the top-left, top-right or bottom half."""
    rng = np.random.default_rng(seed)
    def make(n):
        y = np.repeat(np.arange(3), n)
        x = rng.integers(0, 60, size=(3 * n, 16, 16, 3)).astype(np.uint8)
        for k, (r, c) in enumerate([(2, 2), (2, 10), (10, 6)]):
            x[y == k, r:r + 4, c:c + 4] = 230
        return x, y
    xtr, ytr = make(n_per_class)
    xte, yte = make(n_per_class // 4)
    mean, std = channel_stats(xtr)
    return Dataset("toy", xtr, ytr, xte, yte, ["a", "b", "c"], mean, std)


def test_short_run_lowers_the_loss_and_is_reproducible():
    data = _toy_data()
    tc = TrainConfig(epochs=3, batch_size=20, lr=3e-3, warmup_epochs=0.5, seed=1)
    _, h1, meta = train(CFG, data, tc, quiet=True)
    _, h2, _ = train(CFG, data, tc, quiet=True)
    assert h1.step_losses == h2.step_losses            # same seed, same machine: same trajectory
    assert np.mean(h1.step_losses[-5:]) < np.mean(h1.step_losses[:5])
    assert meta["test_acc"] == h1.test_acc[-1]


def test_interrupted_run_resumes_to_the_same_trajectory(tmp_path, monkeypatch):
    data = _toy_data()
    tc = TrainConfig(epochs=2, batch_size=20, lr=3e-3, warmup_epochs=0.5, seed=3)
    full_params, full, _ = train(CFG, data, tc, quiet=True)
    # interrupt after 4 steps of epoch 1 (Ctrl-C sets the flag; the loop saves and raises)
    import minicct.train.loop as loop
    calls = {"n": 0}
    orig = loop._Progress.update

    def update(self, text):
        calls["n"] += 1
        orig(self, text)
        if calls["n"] == 4:
            raise_flag[0].stop = True
    raise_flag = [None]
    orig_enter = loop._StopFlag.__enter__

    def enter(self):
        raise_flag[0] = self
        return orig_enter(self)
    monkeypatch.setattr(loop._Progress, "update", update)
    monkeypatch.setattr(loop._StopFlag, "__enter__", enter)
    ck = tmp_path / "ck.npz"
    with pytest.raises(KeyboardInterrupt):
        train(CFG, data, tc, checkpoint=ck, quiet=True)
    monkeypatch.undo()
    params, resumed, _ = train(CFG, data, tc, checkpoint=ck, resume=ck, quiet=True)
    assert resumed.step_losses == full.step_losses
    for k in params:
        np.testing.assert_array_equal(params[k], full_params[k])


def test_save_load_roundtrip_with_optimizer_state(tmp_path):
    p = M.init_params(CFG, 0)
    opt = AdamW(1e-3, weight_decay=0.05)
    grads = {k: np.ones_like(v) * 0.1 for k, v in p.items()}
    opt.step(p, grads)
    path = save_checkpoint(tmp_path / "a.npz", p, CFG, {"dataset": "toy", "seed": 0}, opt.state_dict())
    p2, cfg2, meta, opt_state = load_checkpoint(path)
    assert cfg2 == CFG and meta["dataset"] == "toy" and "minicct_version" in meta
    for k in p:
        np.testing.assert_array_equal(p[k], p2[k])
    opt2 = AdamW(1e-3, weight_decay=0.05)
    opt2.load_state_dict(opt_state)
    opt.step(p, grads)
    opt2.step(p2, grads)
    for k in p:
        np.testing.assert_array_equal(p[k], p2[k])
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable minicct checkpoint"):
        load_checkpoint(tmp_path / "bad.npz")
    path = save_checkpoint(tmp_path / "a.npz", M.init_params(CFG, 0), CFG)
    other = M.CCTConfig(**{**CFG.to_dict(), "num_layers": 3})
    with pytest.raises(ValueError, match="another config.*num_layers"):
        load_checkpoint(path, expect_config=other)


def test_train_rejects_mismatched_data():
    data = _toy_data()
    with pytest.raises(ValueError, match="num_classes=3"):
        train(M.CCTConfig(**{**CFG.to_dict(), "num_classes": 4}), data, TrainConfig(epochs=1), quiet=True)
    with pytest.raises(ValueError, match="img_size=32"):
        train(M.CCTConfig(**{**CFG.to_dict(), "img_size": 32}), data, TrainConfig(epochs=1), quiet=True)


def test_adamw_matches_the_formula_and_skips_decay_on_biases_and_norms():
    w = {"a.weight": np.array([[1.0, -2.0]]), "a.bias": np.array([0.5]), "n.norm.weight": np.array([1.0])}
    g = {"a.weight": np.array([[0.1, 0.2]]), "a.bias": np.array([0.3]), "n.norm.weight": np.array([0.4])}
    assert decay_mask(w) == {"a.weight": True, "a.bias": False, "n.norm.weight": False}
    opt = AdamW(0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5)
    w0 = {k: v.copy() for k, v in w.items()}
    opt.step(w, g)
    # first step: m_hat = g, v_hat = g^2 -> update lr * g / (|g| + eps) = lr * sign(g)
    np.testing.assert_allclose(w["a.weight"], w0["a.weight"] * (1 - 0.1 * 0.5) - 0.1 * np.sign(g["a.weight"]),
                               rtol=1e-6)
    np.testing.assert_allclose(w["a.bias"], w0["a.bias"] - 0.1, rtol=1e-6)


def test_sgd_nesterov_matches_torch_formula():
    w = {"x.weight": np.array([[1.0]])}
    opt = SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    g1 = {"x.weight": np.array([[0.5]])}
    opt.step(w, g1)
    d1 = 0.5 + 0.01 * 1.0
    b1 = d1
    assert w["x.weight"][0, 0] == pytest.approx(1.0 - 0.1 * (d1 + 0.9 * b1))


def test_sine_embedding_is_frozen_during_training():
    cfg = M.CCTConfig(**{**CFG.to_dict(), "positional_embedding": "sine"})
    data = _toy_data(20)
    params, _, _ = train(cfg, data, TrainConfig(epochs=1, batch_size=20, seed=0), quiet=True)
    np.testing.assert_array_equal(params["classifier.positional_emb"], M.sine_embedding(cfg.seq_len, 16))


def test_cosine_schedule():
    assert cosine_lr(0, 1e-3, 10, 2, 1e-6, 1e-5) == pytest.approx(1e-6)
    assert cosine_lr(1, 1e-3, 10, 2, 1e-6, 1e-5) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert cosine_lr(5, 1e-3, 10, 2, 1e-6, 1e-5) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi / 2)))
    assert cosine_lr(12, 1e-3, 10, 2) == 1e-5


def test_random_crop_flip_moves_pixels_within_the_padding():
    rng = np.random.default_rng(0)
    x = np.zeros((64, 8, 8, 3), np.uint8)
    x[:, 3, 3] = 255
    out = augment.random_crop_flip(x, rng, pad=2)
    assert out.shape == x.shape and out.dtype == np.uint8
    pos = np.argwhere(out[..., 0] == 255)
    assert len(pos) == 64                                  # the bright pixel always stays inside
    assert np.all(np.abs(pos[:, 1] - 3) <= 2)              # rows move at most pad
    assert len({tuple(p[1:]) for p in pos}) > 4


def test_mixup_and_cutmix_targets_are_consistent():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    q = np.eye(4, dtype=np.float32)
    xm, qm, lam = augment.mixup(x, q, rng)
    np.testing.assert_allclose(xm, lam * x + (1 - lam) * x[::-1], rtol=1e-6)
    xc, qc, lam = augment.cutmix(x, q, rng)
    pasted = np.mean(xc != x, axis=(1, 2, 3))[0]
    assert qc[0, 0] == pytest.approx(lam) and np.allclose(qc.sum(1), 1)
    assert pasted == pytest.approx(1 - lam, abs=0.05)
    with pytest.raises(ValueError, match="even"):
        augment.mix_batch(x[:3], q[:3], rng, mixup_alpha=0.8)


def test_optimizers_match_torch_when_available():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for make, tmake in ((lambda: AdamW(1e-2, weight_decay=0.1),
                         lambda ps: torch.optim.AdamW([{"params": [ps[0]], "weight_decay": 0.1},
                                                       {"params": [ps[1]], "weight_decay": 0.0}], lr=1e-2)),
                        (lambda: SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                         lambda ps: torch.optim.SGD([{"params": [ps[0]], "weight_decay": 0.01},
                                                     {"params": [ps[1]], "weight_decay": 0.0}], lr=0.1,
                                                    momentum=0.9, nesterov=True))):
        w = {"a.weight": rng.standard_normal((4, 3)), "a.bias": rng.standard_normal(4)}
        tw = [torch.tensor(w["a.weight"].copy(), requires_grad=True), torch.tensor(w["a.bias"].copy(), requires_grad=True)]
        opt, topt = make(), tmake(tw)
        for _ in range(5):
            g = {k: rng.standard_normal(v.shape) for k, v in w.items()}
            opt.step(w, g)
            tw[0].grad, tw[1].grad = torch.tensor(g["a.weight"]), torch.tensor(g["a.bias"])
            topt.step()
        np.testing.assert_allclose(w["a.weight"], tw[0].detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(w["a.bias"], tw[1].detach().numpy(), rtol=1e-12, atol=1e-14)
