"""analysis/costs.py: the one measurement behind bench --snp-scale paper and lesson 07's estimate."""
import numpy as np
import pytest

from minicct import bench
from minicct import model as M
from minicct.analysis.costs import measure_snp_rates, project_snp_seconds

TINY = M.CCTConfig(img_size=12, n_conv_layers=2, kernel_size=3, in_planes=4, embedding_dim=8, num_heads=2,
                   num_layers=2, mlp_ratio=2.0, num_classes=5, attention_dropout=0.0, stochastic_depth=0.0)
NAMES = ["enc0.out", "enc1.ff_hidden", "enc1.out"]


@pytest.mark.parametrize("to_disk", [False, True])
def test_rates_are_measured_per_mode_and_site_shape(to_disk, tmp_path):
    r = measure_snp_rates(TINY, NAMES, ("flat", "mean"), n_capture=6, n_readout=30, n_test=10, batch_size=4,
                          workers=1, to_disk=to_disk, directory=tmp_path)
    T, D, F = TINY.seq_len, TINY.embedding_dim, TINY.ff_dim
    assert sorted(r["readout"]) == sorted([f"flat/{T}x{D}", f"flat/{T}x{F}", f"mean/{T}x{D}", f"mean/{T}x{F}"])
    assert r["capture_s_per_image"] > 0 and r["capture_s"] == pytest.approx(6 * r["capture_s_per_image"])
    for v in r["readout"].values():
        assert all(np.isfinite(v[k]) and v[k] > 0 for k in ("train_s_per_image", "test_s_per_image",
                                                            "fields_s_per_image", "epoch_s"))
    assert r["to_disk"] is to_disk and r["workers"] == 1
    assert list(tmp_path.iterdir()) == []                       # the temporary files are gone


def test_projection_is_linear_in_images_epochs_and_passes():
    T, D, F = TINY.seq_len, TINY.embedding_dim, TINY.ff_dim
    one = {"train_s_per_image": 2e-3, "test_s_per_image": 1e-3, "fields_s_per_image": 5e-4}
    rates = {"capture_s_per_image": 0.01, "readout": {f"flat/{T}x{D}": one, f"flat/{T}x{F}": one}}
    p = project_snp_seconds(rates, TINY, NAMES, ("flat",), n_train=1000, n_test=200, epochs=3, passes=2)
    assert p["capture"] == pytest.approx(2 * 1200 * 0.01)
    per = 3 * (1000 * 2e-3 + 200 * 1e-3) + 200 * 5e-4
    assert p["per_site_mode"]["enc0.out/flat"] == pytest.approx(per)
    assert p["readouts"] == pytest.approx(3 * per) and p["total"] == pytest.approx(p["capture"] + 3 * per)
    p2 = project_snp_seconds(rates, TINY, NAMES, ("flat",), n_train=2000, n_test=400, epochs=3, passes=2)
    assert p2["total"] == pytest.approx(2 * p["total"])
    with pytest.raises(ValueError, match="no read-out rate for 'mean/"):
        project_snp_seconds(rates, TINY, NAMES, ("mean",), 10, 10, 1)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_readout must be a positive integer"):
        measure_snp_rates(TINY, NAMES, n_readout=0)
    with pytest.raises(ValueError, match="unknown activation name"):
        measure_snp_rates(TINY, ["enc9.out"])


def test_paper_scale_bench_uses_the_same_measurement(tmp_path):
    """bench --snp-scale paper on a handful of images: the projection is built from measure_snp_rates."""
    r = bench.snp_paper_scale(n_capture=2, n_readout=4, n_test=4, batch_size=2, workers=1, directory=tmp_path)
    rates, p = r["rates"], r["projected"]
    assert rates["to_disk"] and rates["n_capture"] == 2
    assert p["capture_pass_all_sites_s"] == pytest.approx(60000 * rates["capture_s_per_image"])
    cfg = M.get_config("cct_7_3x1_32", num_classes=100)
    ten = project_snp_seconds(rates, cfg, ["enc0.out"], ("flat",), 50000, 10000, 10)
    assert p["site_10_epochs_s"] == pytest.approx(ten["total"])
    assert p["site_10_epochs_readout_s"] == pytest.approx(ten["readouts"])
    text = bench.format_paper(r)
    assert "peak memory < 12 GB" in text and "one site at 10 read-out epochs" in text
