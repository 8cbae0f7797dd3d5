"""minicct.bench: the FLOP count against a hand count, the real step and its breakdown, the PyTorch twin, and the
SNP timing pipeline. No test looks at wall time (the machine is shared): only at what was computed."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minicct import bench
from minicct import model as M
from minicct.datasets import Dataset
from minicct.io.npz_checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY_SET = ["img_size=8", "in_planes=4", "embedding_dim=8", "num_heads=2", "mlp_ratio=1.0"]


def _tiny_cfg():
    return M.get_config("cct_2_3x2_32", num_classes=3, img_size=8, in_planes=4, embedding_dim=8, num_heads=2,
                        mlp_ratio=1.0)


def test_step_flops_equal_a_hand_count():
    # cct_2_3x2_32 shrunk: 8x8 images, convs 3 -> 4 -> 8 channels (3x3, stride 1, pad 1), each followed by a
    # 3/2/1 max-pool: 8x8 -> 4x4 -> 2x2, so T = 4 tokens, D = 8, F = 8, 2 heads, 2 blocks, K = 3, batch N = 2.
    N, T, D, F, K = 2, 4, 8, 8, 3
    conv1 = 2 * N * (8 * 8) * 4 * (3 * 3 * 3)          # 27648: 64 positions, 4 filters of 27 weights
    conv2 = 2 * N * (4 * 4) * 8 * (4 * 3 * 3)          # 18432: 16 positions, 8 filters of 36 weights
    block = (2 * N * T * D * 3 * D                     # 3072 qkv
             + 2 * N * T * T * D * 2                   # 1024 q k^T and P v (all heads together)
             + 2 * N * T * D * D                       # 1024 proj
             + 2 * N * T * D * F * 2)                  # 2048 linear1, linear2
    head = 2 * N * T * D * 2 + 2 * N * D * K           # 256 + 96: pool scores, pooled vector, fc
    forward = conv1 + conv2 + 2 * block + head
    assert forward == 60768
    step = forward + 2 * forward - conv1               # backward 2x, the first conv without an input gradient
    assert step == 154656
    f = bench.step_flops(_tiny_cfg(), N)
    assert (f["forward"], f["backward"], f["step"]) == (forward, 2 * forward - conv1, step)
    assert f["tokenizer"] == conv1 + conv2 and f["head"] == head


def test_benchmark_command_runs_one_real_step_of_a_tiny_model():
    cmd = [sys.executable, "-m", "minicct.bench", "--config", "cct_2_3x2_32@2:3", "--steps", "1", "--warmup", "0",
           "--breakdown-steps", "1", "--matmul-size", "64", "--threads", "1", "--no-torch", "--no-snp", "--json", "-",
           "--rounds", "2"]
    for s in TINY_SET:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    entry, plain = res["cases"]                                          # as configured, then without regularisation
    assert entry["reg"] == "attn-drop 0.1 drop-path 0.1" and plain["reg"] == "none"
    assert plain["case"]["overrides"]["attention_dropout"] == 0.0
    r = entry["numpy"]
    assert len(r["round_step_s"]) == 2 and r["step_s"] == min(r["round_step_s"])   # fastest of 2 rounds
    assert r["workers"] == 1 and "corename" in r["blas"]
    assert "error" not in r, r.get("error")
    assert r["flops"]["step"] == 154656                                 # the hand count above
    assert len(r["step_times_s"]) == 1 and r["step_s"] > 0 and r["images_per_s"] > 0
    assert np.isfinite(r["first_loss"]) and abs(r["first_loss"] - np.log(3)) < 0.5   # near log K at init
    assert r["non_float32"] == []                                       # float32 everywhere in the step
    assert all(n > 0 for n in r["part_calls"].values()), r["part_calls"]   # every part was timed
    assert set(r["parts_s"]) == set(bench.PARTS)
    assert r["peak_rss_mb"] > 0 and r["step_mem_mb"] >= 0
    assert r["matmul_gflops"] > 0 and r["gflops"] == pytest.approx(154656 / r["step_s"] / 1e9)
    assert entry["threads"] == 1 and "torch" not in entry
    text = bench.format_report(res)                                     # the table renders from the JSON
    assert "cct_2_3x2_32 @2 K=3" in text and "where the time goes" in text
    assert "targets:" not in text                                       # targets only for named configs


def test_breakdown_times_the_library_step_by_stage_names_without_replacing_anything():
    import minicct.layers.encoder as E
    cfg = _tiny_cfg()
    before = {n: getattr(E, n) for n in dir(E)}
    params = M.init_params(cfg, 0)
    x, y = bench.make_batch(cfg, 2)
    from minicct.train.optim import AdamW
    opt = AdamW(1e-3)
    timer = bench.PartTimer()
    with timer.active():
        loss = bench.one_step(params, x, y, cfg, opt, np.random.default_rng(0))
        assert sys.getprofile() is not None
    assert sys.getprofile() is None and {n: getattr(E, n) for n in dir(E)} == before
    assert np.isfinite(loss)
    # one step: 2 blocks x (attention forward + backward); 2 tokenizer stages x (forward + backward); the loss:
    # cross-entropy forward + backward; one optimizer step
    assert timer.calls["attention"] == 4 and timer.calls["tokenizer"] == 4
    assert timer.calls["loss"] == 2 and timer.calls["optimizer"] == 1 and opt.t == 1
    assert timer.calls["mlp"] > 0 and timer.calls["norms"] > 0 and timer.calls["pool+head"] == 4


def test_bench_replaces_no_imported_name():
    import ast
    for path in (REPO / "minicct" / "bench").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = {getattr(c.func, "id", getattr(c.func, "attr", "")) for c in ast.walk(tree) if isinstance(c, ast.Call)}
        assert "setattr" not in calls, path


def test_case_and_override_parsing():
    c = bench.Case.parse("cct_7_3x1_32@32:100")
    assert (c.name, c.batch, c.config().num_classes, c.config().seq_len) == ("cct_7_3x1_32", 32, 100, 256)
    assert bench.Case.parse("classroom@16").config().num_classes == 20
    for bad in ("cct_7_3x1_32", "cct_7_3x1_32@x", "nonsense@4", "classroom@0"):
        with pytest.raises(ValueError):
            bench.Case.parse(bad)
    assert bench.parse_overrides(["embedding_dim=16", "mlp_ratio=1.5", "positional_embedding=sine",
                                  "stride=None"]) == {"embedding_dim": 16, "mlp_ratio": 1.5,
                                                      "positional_embedding": "sine", "stride": None}
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        bench.parse_overrides(["depth=3"])


def test_torch_twin_matches_the_numpy_model():
    pytest.importorskip("torch")
    r = bench.bench_torch(bench.Case("cct_2_3x2_32", 2, 3, {k: v for k, v in
                                                           bench.parse_overrides(TINY_SET).items()}),
                          steps=1, warmup=0, threads=1)
    assert r["max_abs_logit_diff"] < 1e-4 and r["step_s"] > 0


def test_snp_timing_pipeline_on_a_tiny_checkpoint(tmp_path):
    cfg = M.CCTConfig(img_size=16, n_conv_layers=1, in_planes=4, embedding_dim=8, num_layers=2, num_heads=2,
                      num_classes=3, attention_dropout=0.0, stochastic_depth=0.0)
    ckpt = save_checkpoint(tmp_path / "tiny.npz", M.init_params(cfg, 0), cfg, {"dataset": "fake"})
    rng = np.random.default_rng(0)
    data = Dataset("fake", rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8), np.arange(60) % 3,
                   rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8), np.arange(30) % 3,
                   ["a", "b", "c"], np.full(3, 0.5), np.full(3, 0.25))
    r = bench.snp_analysis(ckpt, epochs=1, data=data)
    sites = ["tokens"] + [f"enc{e}.{s}" for e in range(2) for s in ("mha_heads", "mha_out", "ff_hidden", "out")]
    assert sorted(r["sites"]) == sorted(sites) and r["n_sites"] == 9
    assert all(0.0 <= v["readout_test_acc"] <= 1.0 for v in r["sites"].values())
    s = r["seconds"]
    assert s["total"] >= s["capture"] + s["analysis"] and s["analysis"] > 0


def test_measuring_processes_run_without_the_openblas_overrides(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "262144")
    env = bench._child_env(2, REPO)
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env and env["OPENBLAS_NUM_THREADS"] == "2"
    kept = bench._child_env(2, REPO, keep_openblas_env=True)
    assert kept["OPENBLAS_CORETYPE"] == "Haswell" and kept["OPENBLAS_L2_SIZE"] == "262144"


def test_every_measuring_process_gets_the_same_allocator_settings(monkeypatch):
    from minicct.memory import MMAP_THRESHOLD, TRIM_THRESHOLD
    monkeypatch.delenv("MINICCT_RETAIN_MEMORY", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    env = bench._child_env(2, REPO)                 # the same env for the numpy, torch and baseline workers
    assert env["MALLOC_MMAP_THRESHOLD_"] == str(MMAP_THRESHOLD) and env["MALLOC_TRIM_THRESHOLD_"] == str(TRIM_THRESHOLD)
    monkeypatch.setenv("MINICCT_RETAIN_MEMORY", "0")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    env = bench._child_env(2, REPO)
    assert "MALLOC_MMAP_THRESHOLD_" not in env and "MALLOC_TRIM_THRESHOLD_" not in env


def test_regularisation_pairs_and_targets():
    cases = bench.with_and_without_regularisation([bench.Case.parse("cct_7_3x1_32@32:100"),
                                                   bench.Case.parse("classroom@128")])
    assert [c.config().attention_dropout for c in cases] == [0.1, 0.0, 0.0]    # classroom has none: measured once
    def entry(case, reg, step, torch_step):
        n = {"step_s": step, "step_mem_mb": 10.0, "gflops": 40.0, "matmul_fraction": 0.4}
        return {"case": {"name": case, "batch": 32, "overrides": {} if reg != "none" else dict(bench.NO_REG)},
                "label": case, "reg": reg, "threads": 2, "numpy": n, "torch": {"step_s": torch_step},
                "time_ratio": step / torch_step, "mem_ratio": 0.5}
    res = {"threads": [2], "cases": [entry("cct_7_3x1_32", "attn-drop 0.1", 1.2, 2.0),
                                     entry("cct_7_3x1_32", "none", 1.0, 1.5)]}
    got = {name: (value, ok) for name, value, ok in bench.targets(res)}
    assert got["cct_7_3x1_32, 2 thr: attention dropout + drop-path add <= 15% to a step"] == ("+20%", False)
    assert got["cct_7_3x1_32 [none], 2 thr: step time <= 0.6x PyTorch"] == ("0.67x", False)
    assert got["cct_7_3x1_32 [attn-drop 0.1], 2 thr: step time <= 0.6x PyTorch"] == ("0.60x", True)
