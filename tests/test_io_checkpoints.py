"""minicct.io.checkpoints: one loader for .npz / plain .pth / timm training checkpoints, config from the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minicct import model as M
from minicct.io.checkpoints import infer_config, load_any_checkpoint
from minicct.io.torch_io import from_params, save_state_dict
from minicct.io.npz_checkpoint import save_checkpoint

FIX = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
TINY = dict(img_size=16, n_conv_layers=2, kernel_size=3, in_planes=8, embedding_dim=16, num_heads=2, num_layers=2,
            mlp_ratio=2.0, num_classes=5, positional_embedding="learnable")


def _shape_state(cfg):
    """A state_dict of the right shapes without the cost of init_params (22M parameters for CCT-14)."""
    state = {k: np.zeros(s, np.float32) for k, s in M.param_shapes(cfg).items()}
    if cfg.positional_embedding == "sine":
        state["classifier.positional_emb"] = M.sine_embedding(cfg.seq_len, cfg.embedding_dim)
    elif cfg.positional_embedding == "learnable":
        state["classifier.positional_emb"] += 0.5
    return state


VARIANT_NAMES = M.VARIANTS + ["cct_7_3x1_32_sine", "cct_7_3x1_32_c100", "cct_7_7x2_224_sine", "cct_14_7x2_384",
                              "cct_2_3x2_32_sine"]


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_config_inferred_from_shapes_round_trips(name):
    cfg = M.get_config(name)
    inferred, how = infer_config(_shape_state(cfg), heads=cfg.num_heads)
    assert how.startswith("tensor shapes")
    assert M.param_shapes(inferred) == M.param_shapes(cfg)
    for f in ("img_size", "n_conv_layers", "kernel_size", "embedding_dim", "num_layers", "num_heads", "mlp_ratio",
              "num_classes", "positional_embedding", "seq_len", "channels"):
        assert getattr(inferred, f) == getattr(cfg, f), (name, f)


def test_positional_embedding_none_needs_the_image_size():
    cfg = M.get_config("cct_2_3x2_32", positional_embedding="none")
    with pytest.raises(ValueError, match="--img-size"):
        infer_config(_shape_state(cfg), heads=2)
    assert M.param_shapes(infer_config(_shape_state(cfg), heads=2, img_size=32)[0]) == M.param_shapes(cfg)


def test_heads_are_required_from_shapes_alone_but_not_with_a_name():
    state = _shape_state(M.get_config("cct_7_3x1_32"))
    with pytest.raises(ValueError, match="--heads H"):
        infer_config(state)
    cfg, how = infer_config(state, arch="cct_7_3x1_32")
    assert cfg.num_heads == 4 and "arch 'cct_7_3x1_32'" in how
    cfg, how = infer_config(state, model="cct_7_3x1_32")
    assert cfg == M.get_config("cct_7_3x1_32") and how.startswith("--model")
    cfg, _ = infer_config(state, arch="cct_unknown_thing", heads=8)   # unknown arch: shapes + heads
    assert cfg.num_heads == 8


def test_classes_come_from_the_fc_tensor_with_a_named_variant():
    cfg = M.get_config("cct_7_3x1_32", num_classes=37)
    got, how = infer_config(_shape_state(cfg), arch="cct_7_3x1_32")
    assert got.num_classes == 37 and "37 classes" in how


def test_mismatch_lists_every_key_and_shape():
    state = _shape_state(M.get_config("cct_2_3x2_32"))
    with pytest.raises(ValueError) as err:
        infer_config(state, model="cct_7_3x2_32")
    msg = str(err.value)
    assert "--model cct_7_3x2_32" in msg and "does not fit" in msg
    assert "classifier.blocks.0.self_attn.qkv.weight: expected shape (768, 256), found (384, 128)" in msg
    assert "missing keys (55)" in msg     # blocks 2..6 of CCT-7: 5 x 11 keys


def test_training_checkpoint_loads_with_heads(capsys):
    want = np.load(FIX / "train_ckpt_expected.npz")
    params, cfg, meta = load_any_checkpoint(FIX / "train_ckpt_cuda.pth", heads=2)
    assert M.param_shapes(cfg) == M.param_shapes(M.CCTConfig(**TINY)) and cfg.img_size == 16
    assert all(np.array_equal(params[k], want["state_dict/" + k]) for k in params)
    assert meta["kind"] == "training checkpoint" and meta["epoch"] == 299 and meta["args"]["model"] == "cct_tiny"
    assert "train_ckpt_cuda.pth: training checkpoint; arch cct_tiny, epoch 299, metric 80.92" in meta["report"]
    assert "config from tensor shapes, 2 heads given" in meta["report"]
    ema, _, meta = load_any_checkpoint(FIX / "train_ckpt_cuda.pth", heads=2, ema=True)
    assert all(np.array_equal(ema[k], want["ema/" + k]) for k in ema) and meta["weights"] == "'state_dict_ema'"


def test_plain_state_dict_and_npz_load_alike(tmp_path):
    cfg = M.CCTConfig(**TINY)
    params = M.init_params(cfg, 1)
    save_state_dict(from_params(params), tmp_path / "w.pth")
    save_checkpoint(tmp_path / "w.npz", params, cfg, {"test_acc": 0.5})
    p1, c1, m1 = load_any_checkpoint(tmp_path / "w.pth", heads=2)
    p2, c2, m2 = load_any_checkpoint(tmp_path / "w.npz")
    assert c2 == cfg and M.param_shapes(c1) == M.param_shapes(cfg)
    assert all(np.array_equal(p1[k], params[k]) and np.array_equal(p2[k], params[k]) for k in params)
    assert m1["kind"] == "state_dict" and m2["kind"] == "npz" and "50.00%" in m2["report"]
    with pytest.raises(ValueError, match="--heads 3"):
        load_any_checkpoint(tmp_path / "w.npz", heads=3)
    with pytest.raises(ValueError, match="no EMA"):
        load_any_checkpoint(tmp_path / "w.npz", ema=True)
    (tmp_path / "junk.pth").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_any_checkpoint(tmp_path / "junk.pth", heads=2)


def test_committed_classroom_checkpoint():
    params, cfg, meta = load_any_checkpoint(REPO / "data" / "checkpoints" / "classroom.npz")
    assert cfg == M.get_config("classroom") and meta["kind"] == "npz"
