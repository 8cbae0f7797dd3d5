"""End to end: the SNP analysis of a tiny CCT trained in the test, the report table, figures, group agreement."""
import math

import numpy as np
import pytest

from minicct import model as M
from minicct.analysis import report as R
from minicct.analysis.nulls import group_agreement
from minicct.analysis.snp import class_means
from minicct.datasets.embedded import make_embedded
from minicct.train.loop import TrainConfig, train

CFG = M.CCTConfig(img_size=32, n_conv_layers=2, kernel_size=3, in_planes=8, embedding_dim=16, num_heads=2,
                  num_layers=2, mlp_ratio=2.0, num_classes=20, attention_dropout=0.0, stochastic_depth=0.0)


@pytest.fixture(scope="module")
def trained():
    data = make_embedded(seed=1, n_train_per_class=16, n_test_per_class=6, difficulty=0.0)
    tc = TrainConfig(epochs=2, batch_size=32, optimizer="sgd", lr=0.05, weight_decay=5e-4, warmup_epochs=0.2,
                     seed=0)
    params, _, _ = train(CFG, data, tc, quiet=True)
    return params, data


def test_run_snp_end_to_end(trained, tmp_path):
    params, data = trained
    rep = R.run_snp(params, CFG, data, sites=("out", "mha_heads", "ff_hidden"), modes=("flat", "mean"), epochs=2,
                    out_dir=tmp_path, progress=None)
    names = [r.name for r in rep.results if r.mode == "flat"]
    assert names == ["tokens", "enc0.mha_heads", "enc0.ff_hidden", "enc0.out",
                     "enc1.mha_heads", "enc1.ff_hidden", "enc1.out"]
    t = rep.table()
    assert len(t["accuracy"]) == 14 and np.all((t["accuracy"] >= 0) & (t["accuracy"] <= 1))
    r = rep.get("enc1.ff_hidden", "flat")
    assert r.V.shape == (CFG.ff_dim, 20, 20) and r.B.shape == r.V.shape
    # the fields invariant on the real model: summing V over nodes gives the per-class mean read-out logits
    A_te = R.capture(params, CFG, data.x_test, data.mean, data.std, ["enc1.out"])["enc1.out"]
    ro = rep.get("enc1.out", "flat").readout
    mean_logits, _ = class_means(ro.logits(A_te), data.y_test, 20)
    np.testing.assert_allclose(rep.get("enc1.out", "flat").V.sum(axis=0), mean_logits, rtol=1e-4, atol=1e-4)
    assert all(p.exists() and p.stat().st_size > 1000 for p in rep.figures)
    text = rep.format_table()
    assert "tokenizer" in text and "enc 2 out" in text


def test_run_snp_splits_capture_passes_under_a_memory_budget(trained):
    params, data = trained
    rep = R.run_snp(params, CFG, data, sites=("out",), modes=("mean",), epochs=1, progress=None,
                    max_capture_bytes=1)          # forces one capture pass per site
    assert [r.name for r in rep.results] == ["tokens", "enc0.out", "enc1.out"]


def test_site_names_and_errors():
    assert R.site_names(CFG, ("out",)) == ["tokens", "enc0.out", "enc1.out"]
    with pytest.raises(ValueError, match="unknown sites"):
        R.site_names(CFG, ("heads",))


def test_group_agreement_exact_chance_matches_sampling():
    groups = {"g": np.repeat(np.arange(4), 5)}            # K = 20 labels in 4 groups of 5
    clusters = [[0, 1], [0, 5], [2, 3, 4], [7, 12, 13]]
    a = group_agreement(clusters + [[9]], groups)["g"]
    assert a["n"] == 4 and a["inside"] == pytest.approx(2 / 4)
    exact = (4 * math.comb(5, 2) / math.comb(20, 2) * 2 + 4 * math.comb(5, 3) / math.comb(20, 3) * 2) / 4
    assert a["chance"] == pytest.approx(exact)
    rng = np.random.default_rng(0)
    sim = np.mean([len(set(groups["g"][rng.choice(20, len(c), replace=False)])) == 1
                   for c in clusters for _ in range(4000)])
    assert sim == pytest.approx(exact, abs=0.01)
    assert math.isnan(group_agreement([[1]], groups)["g"]["inside"])


def test_group_agreement_p_value_is_the_label_permutation_p():
    groups = {"g": np.repeat(np.arange(2), 4)}                          # K = 8 labels, 2 groups of 4: 70 assignments
    a = group_agreement([[0, 1], [2, 3], [4, 5], [6, 7]], groups)["g"]
    assert a["p_method"] == "exact" and a["p_value"] == pytest.approx(6 / 70)   # 6 assignments keep all 4 pairs
    # a repeated cluster is not independent evidence: 3 copies of one pair give the p of one pair, not its cube
    one = group_agreement([[0, 1]], groups)["g"]["p_value"]
    three = group_agreement([[0, 1], [0, 1], [0, 1]], groups)["g"]["p_value"]
    assert three == pytest.approx(one) == pytest.approx(3 / 7)
    b = group_agreement([[0, 5], [0, 6], [5, 1]], groups)["g"]        # none inside: p = 1
    assert b["p_value"] == pytest.approx(1.0)
