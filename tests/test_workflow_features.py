"""Issue 23, goal 2: features files state their layout (a conv map [N, C, H, W] is read as [N, H*W, C]; an
unrecorded 3-D layout is refused), and minicct.capture_torch writes one from a PyTorch model by module name."""
from __future__ import annotations

import numpy as np
import pytest

from minicct import __main__ as cli
from minicct.io.features import read_features, write_features


def _labels(n=30, K=3):
    return np.arange(n) % K, np.arange(n // 2) % K


def test_conv_map_is_read_as_positions_by_channels(tmp_path):
    y_tr, y_te = _labels()
    rng = np.random.default_rng(0)
    a_tr, a_te = rng.normal(size=(30, 5, 2, 3)).astype(np.float32), rng.normal(size=(15, 5, 2, 3)).astype(np.float32)
    np.savez(tmp_path / "f.npz", y_train=y_tr, y_test=y_te, **{"train/conv": a_tr, "test/conv": a_te})
    fs = read_features(tmp_path / "f.npz")
    assert fs.shapes["conv"] == (6, 5) and fs.layouts["conv"] == "NCHW"
    A, _ = fs.arrays("conv")
    assert np.array_equal(A, a_tr.reshape(30, 5, 6).transpose(0, 2, 1))
    write_features(tmp_path / "w.npz", {"conv": (a_tr, a_te)}, y_tr, y_te)
    fs2 = read_features(tmp_path / "w.npz")
    assert fs2.shapes["conv"] == (6, 5) and np.array_equal(fs2.arrays("conv")[0], A)


def test_unrecorded_3d_layout_is_refused_and_can_be_stated(tmp_path, capsys):
    y_tr, y_te = _labels()
    a_tr, a_te = np.ones((30, 5, 6), np.float32), np.ones((15, 5, 6), np.float32)      # out.flatten(2): [N, C, HW]
    np.savez(tmp_path / "f.npz", y_train=y_tr, y_test=y_te, **{"train/c": a_tr, "test/c": a_te})
    with pytest.raises(ValueError, match=r"does not say its layout.*--layout NTD or --layout NCT"):
        read_features(tmp_path / "f.npz")
    assert cli.main(["snp-arrays", str(tmp_path / "f.npz")]) == 1
    assert "--layout NCT" in capsys.readouterr().err
    fs = read_features(tmp_path / "f.npz", layout="NCT")
    assert fs.shapes["c"] == (6, 5) and fs.arrays("c")[0].shape == (30, 6, 5)
    np.savez(tmp_path / "g.npz", y_train=y_tr, y_test=y_te, layout="NTD", **{"train/c": a_tr, "test/c": a_te})
    assert read_features(tmp_path / "g.npz").shapes["c"] == (5, 6)
    with pytest.raises(ValueError, match="recorded as NTD"):
        read_features(tmp_path / "g.npz", layout="NCT")
    write_features(tmp_path / "w.npz", {"c": (a_tr, a_te)}, y_tr, y_te, layout="NCT")
    assert read_features(tmp_path / "w.npz").shapes["c"] == (6, 5)


def test_capture_features_from_a_pytorch_model(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from torch import nn

    from minicct.capture_torch import capture_features

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.cls = nn.Parameter(torch.randn(1, 1, 4))
            self.block = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            f = self.conv(x)                                     # [N, 4, 8, 8]
            t = f.flatten(2).transpose(1, 2)                     # [N, 64, 4]
            t = self.block(torch.cat([self.cls.expand(len(t), -1, -1), t], 1))   # [N, 65, 4]
            return self.fc(t[:, 0])

    torch.manual_seed(0)
    net = Net().train()
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
    y_tr, y_te = np.arange(20) % 3, np.arange(9) % 3
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    path = capture_features(net, {"conv": "conv", "tok": "block"}, tmp_path / "f.npz", train=(x_tr, y_tr),
                            test=(x_te, y_te), class_names=["a", "b", "c"], batch_size=7, mean=mean, std=std,
                            prefix_tokens={"tok": 1})
    assert net.training                                          # the mode is restored
    fs = read_features(path)
    assert fs.shapes == {"conv": (64, 4), "tok": (64, 4)} and fs.class_names == ["a", "b", "c"]
    xt = (torch.from_numpy(x_tr).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = net.conv(xt).flatten(2).transpose(1, 2).numpy()
    A, _ = fs.arrays("conv")
    assert np.allclose(A, want, atol=1e-5)
    # a DataLoader-like iterable of (x, y) float batches gives the same
    batches = [(xt[i:i + 6], torch.from_numpy(y_tr[i:i + 6])) for i in range(0, 20, 6)]
    capture_features(net, ["conv"], tmp_path / "g.npz", train=batches, test=batches, progress=None)
    assert np.allclose(read_features(tmp_path / "g.npz").arrays("conv")[0], want, atol=1e-5)
    with pytest.raises(ValueError, match="no module 'blok'.*close names"):
        capture_features(net, ["blok"], tmp_path / "h.npz", train=(x_tr, y_tr), test=(x_te, y_te))
    assert cli.main(["snp-arrays", str(path), "--modes", "mean", "--epochs", "1"]) == 0

