"""Batch-parallel workers (minicct.parallel): same results as one worker, BLAS thread control."""
import numpy as np
import pytest

from minicct import model as M
from minicct import parallel as P
from minicct.train.optim import SGD, AdamW

TINY = M.CCTConfig(img_size=12, n_conv_layers=1, kernel_size=3, embedding_dim=16, num_layers=2, num_heads=2,
                   num_classes=5, positional_embedding="learnable", attention_dropout=0.0, stochastic_depth=0.0)
CLASSROOM = M.get_config("classroom", num_classes=20)


class _NoUpdate:
    """An optimiser that leaves the parameters alone: train_step then only computes loss, logits, gradients."""

    def step(self, params, grads, lr=None):
        pass


def step_grads(params, x, y, cfg, rng, smoothing, workers):
    """(loss, logits, grads) of train_step's forward -> loss -> backward, the batch on `workers` threads."""
    from minicct.train.step import train_step
    r = train_step(params, _NoUpdate(), x, y, cfg, rng, smoothing=smoothing, run_shards=P.batch_parallel(workers))
    return r.loss, r.logits, r.grads


def _train(cfg, workers, steps=3, n=10, opt="adamw", seed=0):
    params = M.init_params(cfg, seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, cfg.img_size, cfg.img_size)).astype(np.float32)
    y = rng.integers(0, cfg.num_classes, n)
    o = AdamW(1e-3, weight_decay=0.05, frozen=M.frozen_params(cfg)) if opt == "adamw" else \
        SGD(0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, frozen=M.frozen_params(cfg))
    drop_rng = np.random.default_rng(seed + 1)
    losses = []
    for _ in range(steps):
        loss, logits, grads = step_grads(params, x, y, cfg, drop_rng, 0.1, workers)
        o.step(params, grads)
        losses.append(loss)
    return params, losses, drop_rng.bit_generator.state


@pytest.mark.parametrize("cfg,opt", [(TINY, "adamw"), (CLASSROOM, "sgd"),
                                     (M.CCTConfig(**{**TINY.to_dict(), "attention_dropout": 0.2,
                                                     "stochastic_depth": 0.3, "dropout": 0.1}), "adamw")],
                         ids=["tiny", "classroom (lesson 02)", "tiny with dropout and drop-path"])
@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_step_equals_one_worker(cfg, opt, workers):
    p1, l1, s1 = _train(cfg, 1, opt=opt)
    pw, lw, sw = _train(cfg, workers, opt=opt)
    assert s1 == sw                                        # the generator ends where one worker's does
    np.testing.assert_allclose(lw, l1, rtol=1e-5)
    for k in p1:
        if k == "classifier.attention_pool.bias" and opt == "adamw":
            # softmax over tokens ignores a shift: this gradient is 0 up to rounding, and AdamW turns rounding
            # noise into steps of size lr; compared through the gradients below instead
            continue
        np.testing.assert_allclose(pw[k], p1[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_gradients_equal_one_worker(workers):
    cfg = M.CCTConfig(**{**TINY.to_dict(), "attention_dropout": 0.2, "stochastic_depth": 0.3})
    params = M.init_params(cfg, 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 5, 9)
    l1, z1, g1 = step_grads(params, x, y, cfg, np.random.default_rng(5), 0.1, 1)
    lw, zw, gw = step_grads(params, x, y, cfg, np.random.default_rng(5), 0.1, workers)
    np.testing.assert_array_equal(zw, z1) if workers == 1 else np.testing.assert_allclose(zw, z1, rtol=1e-5, atol=1e-6)
    for k in g1:
        scale = max(float(np.abs(g1[k]).max()), 1e-6)
        assert float(np.abs(gw[k] - g1[k]).max()) <= 1e-5 * scale + 1e-8, k


def test_shard_masks_equal_batch_masks():
    from minicct.layers.kernels import keep_mask
    shape, n = (7, 3, 5, 5), 7
    for a, b in [(0, 3), (3, 7), (2, 5)]:
        full = keep_mask(np.random.default_rng(4), shape, 0.3)
        part = keep_mask(P.ShardStream(np.random.default_rng(4).bit_generator, a, b, n), (b - a,) + shape[1:], 0.3)
        np.testing.assert_array_equal(part, full[a:b])


def test_split_and_run():
    assert P.split(10, 3) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert P.split(2, 4) == [slice(0, 1), slice(1, 2)]
    assert P.run(lambda i: i * i, range(7), 2) == [i * i for i in range(7)]
    with pytest.raises(ZeroDivisionError):
        P.run(lambda i: 1 // (i - 3), range(6), 2)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        P.resolve_workers(0)


def test_blas_threads_restored():
    if not P.blas_controllable():
        pytest.skip("NumPy's BLAS is not a controllable OpenBLAS here")
    before = P.get_blas_threads()
    with P.blas_threads(1):
        assert P.get_blas_threads() == 1
    assert P.get_blas_threads() == before
    info = P.blas_info()
    assert info["corename"] and info["threads"] == before


def test_parallel_capture_equals_serial_exactly(tmp_path):
    cfg = CLASSROOM
    params = M.init_params(cfg, 0)
    x = np.random.default_rng(1).standard_normal((37, 3, 32, 32)).astype(np.float32)
    names = ["tokens", "enc1.mha_heads", "enc3.out", "pooled"]
    z1, a1 = P.predict(params, x, cfg, batch_size=8, capture=names, workers=1)
    z2, a2 = P.predict(params, x, cfg, batch_size=8, capture=names, workers=2)
    np.testing.assert_array_equal(z2, z1)
    for k in names:
        np.testing.assert_array_equal(a2[k], a1[k])
    # written batch by batch into a memory-mapped file instead
    mm = np.lib.format.open_memmap(tmp_path / "enc3.out.npy", mode="w+", dtype=np.float32, shape=a1["enc3.out"].shape)
    _, a3 = P.predict(params, x, cfg, batch_size=8, capture=["enc3.out"], workers=2, out={"enc3.out": mm})
    assert a3["enc3.out"] is mm
    mm.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "enc3.out.npy"), a1["enc3.out"])


def test_train_step_with_workers_matches_one_worker():
    from minicct.train.step import train_step
    cfg = M.CCTConfig(**{**TINY.to_dict(), "attention_dropout": 0.1, "stochastic_depth": 0.1})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 12, 12)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    runs = []
    for w in (1, 2):
        p, o, r = M.init_params(cfg, 1), SGD(0.05, momentum=0.9), np.random.default_rng(3)
        for _ in range(3):
            train_step(p, o, x, y, cfg, r, smoothing=0.1, run_shards=P.batch_parallel(w))
        runs.append(p)
    for k in runs[0]:
        np.testing.assert_allclose(runs[1][k], runs[0][k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_capture_to_disk_equals_predict_and_trains_a_readout_from_disk(tmp_path):
    from minicct.analysis.capture_disk import capture_to_disk
    from minicct.analysis.readout import train_readout
    cfg = TINY
    params = M.init_params(cfg, 0)
    x = np.random.default_rng(2).standard_normal((23, 3, 12, 12)).astype(np.float32)
    y = np.arange(23) % 5
    sites = ["enc1.out", "enc0.ff_hidden", "pooled"]
    _, ref = M.predict(params, x, cfg, batch_size=4, capture=sites)
    got = capture_to_disk(params, x, cfg, sites, tmp_path, batch_size=4, chunk=7, workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.npy" for s in sites)   # no .part left
    for k in sites:
        assert isinstance(got[k], np.memmap)
        np.testing.assert_array_equal(got[k], ref[k])
    # the read-out reads the memmap by positioned reads: the same result as from the array in memory
    r_disk = train_readout(got["enc1.out"], y, 5, epochs=2, batch_size=6, seed=1)
    r_mem = train_readout(np.array(ref["enc1.out"]), y, 5, epochs=2, batch_size=6, seed=1)
    np.testing.assert_array_equal(r_disk.W, r_mem.W)
