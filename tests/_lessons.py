"""Shared by the lesson tests: a tiny CCT trained in the test session, and a lesson script loaded as a module."""
import importlib.util
from pathlib import Path

from minicct import model as M
from minicct.datasets.embedded import make_embedded
from minicct.train.loop import TrainConfig, train

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
TINY = M.CCTConfig(img_size=32, n_conv_layers=2, kernel_size=3, in_planes=8, embedding_dim=16, num_heads=2,
                   num_layers=2, mlp_ratio=2.0, num_classes=20, attention_dropout=0.0, stochastic_depth=0.0)


def tiny_checkpoint(folder, n_train_per_class, n_test_per_class):
    """Train TINY for one epoch on a small embedded set; returns (checkpoint path, the Dataset)."""
    data = make_embedded(n_train_per_class=n_train_per_class, n_test_per_class=n_test_per_class)
    path = Path(folder) / "tiny.npz"
    tc = TrainConfig(epochs=1, batch_size=50, optimizer="sgd", lr=0.05, weight_decay=5e-4, warmup_epochs=0,
                     augment=False)
    train(TINY, data, tc, checkpoint=path, quiet=True)
    return path, data


def load_lesson(name, data, monkeypatch):
    """lessons/<name> as a module whose `load` returns `data` (the small embedded set instead of the cached one).

    Lessons load their images through lessons/_common.py, so its `load` is replaced too."""
    monkeypatch.syspath_prepend(str(LESSONS))
    import _common
    monkeypatch.setattr(_common, "load", lambda *a, **k: data)
    spec = importlib.util.spec_from_file_location(name.replace(".py", "").lstrip("0123456789_"), LESSONS / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "load", lambda *a, **k: data, raising=False)
    return mod
