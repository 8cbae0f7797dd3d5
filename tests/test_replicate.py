"""The replication report end to end on a tiny checkpoint trained here: rows, verdicts, outputs, determinism, CLI."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from minicct import model as M
from minicct.analysis.replicate import CLAIMS, format_claims_table, replicate, write_outputs
from minicct.datasets.embedded import make_embedded
from minicct.train.loop import TrainConfig, train

TINY = M.CCTConfig(img_size=32, n_conv_layers=2, kernel_size=3, in_planes=8, embedding_dim=16, num_heads=2,
                   num_layers=2, mlp_ratio=2.0, num_classes=20, attention_dropout=0.0, stochastic_depth=0.0)
VERDICTS = ("supported", "contradicted", "inconclusive")


@pytest.fixture(scope="module")
def tiny():
    data = make_embedded(n_train_per_class=15, n_test_per_class=8)
    tc = TrainConfig(epochs=1, batch_size=50, optimizer="sgd", lr=0.05, weight_decay=5e-4, warmup_epochs=0,
                     augment=False)
    params, _, _ = train(TINY, data, tc, quiet=True)
    return params, data


def _run(params, data):
    return replicate(params, TINY, data, seeds=(0, 1), modes=("flat",), epochs=1, n_draws=20, n_perm=50,
                     group_draws=200, progress=None)


def test_replicate_rows_outputs_and_determinism(tiny, tmp_path):
    params, data = tiny
    res = _run(params, data)
    ids = {r["id"] for r in res["rows"]}
    assert ids == set(CLAIMS)                                 # every claim gets a row
    for r in res["rows"]:
        assert r["claim"] == CLAIMS[r["id"]][1] and r["measured"] and r["null_or_baseline"]
        words = re.findall(r"[a-z]+(?=\)|;|$)", r["verdict"])        # the word ending each verdict part
        assert words and all(w in VERDICTS for w in words), r["verdict"]
    acc = res["positions"]["flat"]["accuracy"]
    assert len(acc) == TINY.num_layers + 1 and all(len(s["values"]) == 2 for s in acc)
    paths = write_outputs(res, tmp_path, "tiny")
    js = json.loads(Path(paths["json"]).read_text())
    assert js["title"] == "tiny" and len(js["rows"]) == len(res["rows"])
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_claims_table(res)
    assert table.count("\n| \"") == len(res["rows"])
    again = _run(params, data)                                # same seeds -> same numbers
    assert [r["measured"] for r in again["rows"]] == [r["measured"] for r in res["rows"]]
    np.testing.assert_array_equal(again["andc_readout"]["andc"], res["andc_readout"]["andc"])


def test_replicate_needs_the_flat_readout_and_matching_data(tiny):
    params, data = tiny
    with pytest.raises(ValueError, match="flat"):
        replicate(params, TINY, data, modes=("mean",), progress=None)
    with pytest.raises(ValueError, match="distinct"):
        replicate(params, TINY, data, seeds=(0, 0), progress=None)
