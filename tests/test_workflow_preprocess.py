"""Issue 23, goal 1: a model carries its preprocessing (mean, std, size, class names) from training through
evaluate / snp to export (a timm-style JSON and the printed PyTorch lines); evaluate's top-5, per-class
accuracy and confusion matrix."""
from __future__ import annotations

import json

import numpy as np
import pytest

from minicct import __main__ as cli
from minicct import model as M
from minicct.datasets import load, to_model_input
from minicct.evaluation import metrics, unique_labels
from minicct.io.npz_checkpoint import load_checkpoint, save_checkpoint
from minicct.preprocess import choose_stats, from_meta, record

TINY = dict(img_size=16, n_conv_layers=1, kernel_size=3, embedding_dim=16, num_heads=2, num_layers=2,
            mlp_ratio=2.0, num_classes=4, positional_embedding="learnable")


def _data(tmp_path, stats=False, bright=0):
    rng = np.random.default_rng(0)
    x_tr = np.clip(rng.integers(0, 256, (40, 16, 16, 3)) // 2 + bright, 0, 255).astype(np.uint8)
    x_te = np.clip(rng.integers(0, 256, (24, 16, 16, 3)) // 2 + bright, 0, 255).astype(np.uint8)
    path = tmp_path / f"d{int(stats)}{bright}.npz"
    extra = dict(mean=np.array([0.5, 0.5, 0.5]), std=np.array([0.25, 0.25, 0.25])) if stats else {}
    np.savez(path, x_train=x_tr, y_train=np.arange(40) % 4, x_test=x_te, y_test=np.arange(24) % 4,
             class_names=np.array(["ant", "bee", "cat", "dog"]), **extra)
    return path


def _model(tmp_path, data):
    cfg = M.CCTConfig(**TINY)
    params = M.init_params(cfg, 0)
    path = tmp_path / "m.npz"
    save_checkpoint(path, params, cfg, {"dataset": data.name, "preprocess": record(data)})
    return path, params, cfg


def test_training_records_preprocessing(tmp_path):
    from minicct.train.loop import TrainConfig, train
    data = load(f"npz:{_data(tmp_path)}")
    cfg = M.CCTConfig(**TINY)
    ck = tmp_path / "t.npz"
    train(cfg, data, TrainConfig(epochs=1, batch_size=20), checkpoint=ck, quiet=True)
    pre = load_checkpoint(ck)[2]["preprocess"]
    assert pre["class_names"] == ["ant", "bee", "cat", "dog"] and pre["img_size"] == 16
    assert np.allclose(pre["mean"], data.mean, atol=1e-6) and np.allclose(pre["std"], data.std, atol=1e-6)


def test_choose_stats_model_record_unless_the_data_states_its_own(tmp_path):
    train_data = load(f"npz:{_data(tmp_path)}")
    pre = record(train_data)
    other = load(f"npz:{_data(tmp_path, bright=100)}")          # brighter images, stats computed from them
    mean, std, note = choose_stats(other, pre)
    assert np.allclose(mean, train_data.mean) and "recorded with the model" in note and "own would be" in note
    stated = load(f"npz:{_data(tmp_path, stats=True)}")
    mean, std, note = choose_stats(stated, pre)
    assert np.allclose(mean, 0.5) and "stated by the dataset" in note
    mean, std, note = choose_stats(other, None)
    assert np.allclose(mean, other.mean) and "records none" in note


def test_timm_training_args_give_mean_and_std():
    cfg = M.CCTConfig(**TINY)
    meta = {"args": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616], "input_size": [3, 16, 16],
                     "interpolation": "bicubic", "dataset": "cifar10"}}
    pre = from_meta(meta, cfg)
    assert pre["mean"] == [0.4914, 0.4822, 0.4465] and pre["img_size"] == 16 and "args" in pre["source"]
    assert from_meta({"args": {"mean": None, "std": None}}, cfg) is None     # timm's default: not recorded


def test_evaluate_uses_and_reports_the_recorded_stats_top5_per_class_confusion(tmp_path, capsys):
    train_data = load(f"npz:{_data(tmp_path)}")
    ck, params, cfg = _model(tmp_path, train_data)
    other = _data(tmp_path, bright=100)
    rc = cli.main(["evaluate", "--checkpoint", str(ck), "--dataset", f"npz:{other}", "--out", str(tmp_path / "ev")])
    out = capsys.readouterr().out
    assert rc == 0 and "recorded with the model" in out and "top-4" in out and "per-class accuracy" in out
    res = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    data = load(f"npz:{other}")
    logits = M.predict(params, data.x_test, cfg, 50, transform=lambda b: to_model_input(b, train_data.mean,
                                                                                       train_data.std))
    m = metrics(logits, data.y_test, 4)
    assert res["top1"] == pytest.approx(m["top1"]) and np.array_equal(res["confusion"], m["confusion"])
    assert np.allclose(res["mean"], train_data.mean, atol=1e-5)


def test_metrics_topk_per_class_and_confusion():
    logits = np.array([[3, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5], [5, 0, 0, 0, 0, 0]], float)
    m = metrics(logits, np.array([1, 0, 0]), 6)
    assert m["top1"] == pytest.approx(1 / 3) and m["topk"] == pytest.approx(2 / 3) and m["k"] == 5
    assert m["confusion"][0, 5] == 1 and m["confusion"][0, 0] == 1 and m["support"][0] == 2
    assert m["per_class"][0] == 0.5 and np.isnan(m["per_class"][2])


def test_unique_labels_never_duplicate():
    names = ["aquarium_fish_1", "aquarium_fish_2", "maple_tree", "maple_tree_x", "sweet_pepper"]
    out = unique_labels(names, 10)
    assert len(set(out)) == len(out) and all(len(o) <= 13 for o in out)


def test_export_writes_pretrained_cfg_and_snippet_has_normalize_and_classes(tmp_path, capsys):
    train_data = load(f"npz:{_data(tmp_path)}")
    ck, _, _ = _model(tmp_path, train_data)
    assert cli.main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "m.pth")]) == 0
    out = capsys.readouterr().out
    j = json.loads((tmp_path / "m.json").read_text())
    assert j["input_size"] == [3, 16, 16] and j["num_classes"] == 4 and j["label_names"] == ["ant", "bee", "cat", "dog"]
    assert np.allclose(j["mean"], train_data.mean, atol=1e-5) and np.allclose(j["std"], train_data.std, atol=1e-5)
    assert "transforms.Normalize(mean=[" in out and "'ant', 'bee', 'cat', 'dog'" in out
    # .pth -> .npz: the JSON beside the .pth brings the record back
    assert cli.main(["export", "--checkpoint", str(tmp_path / "m.pth"), "--heads", "2",
                     "--out", str(tmp_path / "back.npz")]) == 0
    pre = load_checkpoint(tmp_path / "back.npz")[2]["preprocess"]
    assert pre["class_names"] == ["ant", "bee", "cat", "dog"]


def test_export_without_record_says_so_and_dataset_fills_it(tmp_path, capsys):
    cfg = M.CCTConfig(**TINY)
    save_checkpoint(tmp_path / "old.npz", M.init_params(cfg, 0), cfg, {})
    assert cli.main(["export", "--checkpoint", str(tmp_path / "old.npz"), "--out", str(tmp_path / "o.pth")]) == 0
    out = capsys.readouterr().out
    assert "NOT recorded" in out and json.loads((tmp_path / "o.json").read_text())["mean"] is None
    d = _data(tmp_path)
    assert cli.main(["export", "--checkpoint", str(tmp_path / "old.npz"), "--dataset", f"npz:{d}",
                     "--out", str(tmp_path / "o2.pth")]) == 0
    assert np.allclose(json.loads((tmp_path / "o2.json").read_text())["mean"], load(f"npz:{d}").mean, atol=1e-5)


def test_pytorch_round_trip_with_the_exported_preprocessing(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from minicct.io.torch_io import load_state_dict
    from minicct.tools.torch_cct import torch_cct
    train_data = load(f"npz:{_data(tmp_path)}")
    ck, params, cfg = _model(tmp_path, train_data)
    assert cli.main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "m.pth")]) == 0
    j = json.loads((tmp_path / "m.json").read_text())
    net = torch_cct(torch, cfg)
    net.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True))
    net.eval()
    x = train_data.x_test
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255                      # ToTensor()
    mean, std = torch.tensor(j["mean"]).view(1, 3, 1, 1), torch.tensor(j["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = M.predict(params, x, cfg, 50, transform=lambda b: to_model_input(b, train_data.mean, train_data.std))
        theirs = net((t - mean) / std).numpy()
        bare = net(t).numpy()                                                       # ToTensor() alone
    assert np.allclose(theirs, ours, atol=2e-4)
    assert not np.allclose(bare, ours, atol=1e-2)
    del load_state_dict
