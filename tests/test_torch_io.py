"""Tests of minicct.io.torch_io: reading/writing torch.save zip checkpoints without torch.

Fixtures (tests/fixtures/, made by make_torch_fixture.py with real torch; see the README there):
tiny_cct.pth + tiny_cct_expected.npz, tensors.pth + tensors_expected.npz, legacy.pth, wrapped.pth.
"""
from __future__ import annotations

import importlib.util
import io
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minicct.io import atomic, torch_io, torch_read
from minicct.io.torch_io import CheckpointError, UnsafeCheckpointError, load_state_dict, save_state_dict

FIX = Path(__file__).resolve().parent / "fixtures"
TINY = FIX / "tiny_cct.pth"
TENSORS = FIX / "tensors.pth"


def _tiny_expected():
    e = np.load(FIX / "tiny_cct_expected.npz")
    keys = [str(k) for k in e["keys"]]
    return keys, {k: e["state_dict/" + k] for k in keys}, e["x"], e["logits"]


def _tensors_expected():
    e = np.load(FIX / "tensors_expected.npz")
    return {str(k): e[str(k)] for k in e["keys"]}


def _zip_with_pickle(path: Path, pkl: bytes, extra: dict | None = None, prefix: str = "archive"):
    """A zip shaped like a torch checkpoint: <prefix>/data.pkl, byteorder, version, optional data members."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        zf.writestr(f"{prefix}/byteorder", b"little")
        for name, data in (extra or {}).items():
            zf.writestr(f"{prefix}/{name}", data)
        zf.writestr(f"{prefix}/version", b"3\n")
    return path


def _data_offset(path: Path, member: str) -> int:
    """File offset of a stored member's first payload byte (from its local header)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


# ------------------------------------------------------------------------------------------------ reading


def test_tiny_fixture_loads_exact_values_dtypes_and_order():
    keys, expected, _, _ = _tiny_expected()
    sd = load_state_dict(TINY)
    assert list(sd) == keys
    assert keys[0] == "tokenizer.conv_layers.0.0.weight" and keys[-1] == "classifier.fc.bias"
    for k in keys:
        assert sd[k].dtype == np.float32 and sd[k].shape == expected[k].shape, k
        assert np.array_equal(sd[k], expected[k]), k
    assert sd["classifier.blocks.0.self_attn.qkv.weight"].shape == (48, 16)
    assert sd["classifier.positional_emb"].shape == (1, 16, 16)


def test_tensors_fixture_strides_offsets_and_dtypes():
    expected = _tensors_expected()
    sd = load_state_dict(TENSORS)
    assert list(sd) == list(expected)
    for k, want in expected.items():
        got = sd[k]
        assert got.dtype == want.dtype, (k, got.dtype, want.dtype)
        assert got.shape == want.shape, k
        assert np.array_equal(got, want), k
        assert got.flags.c_contiguous and got.dtype.isnative, k
    # the views really shared storages in the file (so offsets/strides were exercised), and values are right
    with zipfile.ZipFile(TENSORS) as zf:
        n_storages = sum("/data/" in n for n in zf.namelist())
    assert n_storages < len(expected)
    base = sd["base"]
    assert np.array_equal(sd["transposed"], base.T) and np.array_equal(sd["rows"], base[1:3])
    assert np.array_equal(sd["column"], base[:, 2])
    assert np.array_equal(sd["tail"], np.arange(90, 100) * 0.5)
    assert np.array_equal(sd["expanded"], [[0, 1, 2], [0, 1, 2]])
    assert sd["bfloat16"].dtype == np.float32 and sd["bfloat16"][1] == -2.25
    assert sd["int64"][3] == -(2**62) and sd["scalar"].shape == () and sd["empty"].shape == (0, 3)


def test_sine_pe_table_matches_formula():
    """The stored sine table is the official formula (anchor 1.2): sin on even, cos on odd channels."""
    pe = load_state_dict(TENSORS)["sine_pe"][0]  # [T, D]
    t, d = pe.shape
    p, i = np.arange(t)[:, None], np.arange(d)[None, :]
    angle = (p / 10000 ** (2 * (i // 2) / d)).astype(np.float32)
    want = np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(pe, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_strided_view_matches_index_formula(seed):
    """element idx of the tensor = storage[offset + sum(idx * stride)] for random geometries."""
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 4))
    size = tuple(int(n) for n in rng.integers(1, 5, ndim))
    stride = tuple(int(s) for s in rng.integers(0, 7, ndim))
    offset = int(rng.integers(0, 5))
    numel = offset + sum((n - 1) * s for n, s in zip(size, stride)) + int(rng.integers(1, 4))
    data = rng.standard_normal(numel).astype(np.float32)
    for byteorder in ("little", "big"):
        raw = data.astype(">f4" if byteorder == "big" else "<f4").tobytes()
        got = torch_io._tensor_from_storage(torch_io._Storage("0", raw, "f4", byteorder), offset, size, stride)
        want = np.empty(size, np.float32)
        for idx in np.ndindex(*size):
            want[idx] = data[offset + sum(a * b for a, b in zip(idx, stride))]
        assert got.dtype == np.float32 and np.array_equal(got, want)


def test_out_of_bounds_view_is_rejected(tmp_path):
    storage = torch_io._Storage("0", np.zeros(10, np.float32).tobytes(), "f4", "little")
    with pytest.raises(CheckpointError, match="reaches element 10"):
        torch_io._tensor_from_storage(storage, 8, (3,), (1,))
    with pytest.raises(CheckpointError, match="reaches element 12"):
        torch_io._tensor_from_storage(storage, 0, (2, 2), (10, 2))
    with pytest.raises(CheckpointError, match="geometry"):
        torch_io._tensor_from_storage(storage, 0, (2,), (-1,))
    with pytest.raises(CheckpointError, match="would expand"):  # a 2**40-element broadcast of 10 elements
        torch_io._tensor_from_storage(storage, 0, (2**20, 2**20), (0, 0))
    # same in a whole file: a tensor claiming more elements than its storage record holds
    pw = torch_io._PickleWriter()
    pw.empty_ordered_dict()
    pw.out += pickle.MARK
    pw.str_("w")
    pw.tensor("FloatStorage", "0", 4, (3, 2), (2, 1))
    pw.out += pickle.SETITEMS + pickle.STOP
    path = _zip_with_pickle(tmp_path / "oob.pth", bytes(pw.out), {"data/0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(CheckpointError, match="corrupt"):
        load_state_dict(path)


def test_older_rebuild_functions(tmp_path):
    """_rebuild_tensor (4 args, torch < 1.x) and _rebuild_parameter_with_state wrapping a v2 tensor."""
    def storage_pid(pw, key, numel):
        pw.out += pickle.MARK
        pw.str_("storage")
        pw.global_("torch", "DoubleStorage")
        pw.str_(key)
        pw.str_("cuda:0")  # location is irrelevant: everything is loaded to host memory
        pw.int_(numel)
        pw.out += pickle.TUPLE + pickle.BINPERSID

    pw = torch_io._PickleWriter()
    pw.out += pickle.EMPTY_DICT + pickle.MARK
    pw.str_("v1")
    pw.global_("torch._utils", "_rebuild_tensor")
    pw.out += pickle.MARK
    storage_pid(pw, "0", 6)
    pw.int_(1)
    pw.int_tuple((2, 2))
    pw.int_tuple((1, 2))
    pw.out += pickle.TUPLE + pickle.REDUCE
    pw.str_("p")
    pw.global_("torch._utils", "_rebuild_parameter_with_state")
    pw.out += pickle.MARK
    pw.tensor("DoubleStorage", "0", 6, (3,), (2,))
    pw.out += pickle.NEWTRUE
    pw.empty_ordered_dict()
    pw.out += pickle.EMPTY_DICT + pickle.TUPLE + pickle.REDUCE
    pw.out += pickle.SETITEMS + pickle.STOP
    data = np.arange(6, dtype=np.float64)
    sd = load_state_dict(_zip_with_pickle(tmp_path / "old.pth", bytes(pw.out), {"data/0": data.tobytes()}))
    assert np.array_equal(sd["v1"], [[1, 3], [2, 4]]) and np.array_equal(sd["p"], [0, 2, 4])


def test_storage_size_mismatch_and_missing_storage(tmp_path):
    pw = torch_io._PickleWriter()
    pw.empty_ordered_dict()
    pw.out += pickle.MARK
    pw.str_("w")
    pw.tensor("FloatStorage", "0", 4, (4,), (1,))
    pw.out += pickle.SETITEMS + pickle.STOP
    short = _zip_with_pickle(tmp_path / "short.pth", bytes(pw.out), {"data/0": b"\0" * 12})
    with pytest.raises(CheckpointError, match="holds 12 bytes, expected 4 x 4"):
        load_state_dict(short)
    missing = _zip_with_pickle(tmp_path / "missing.pth", bytes(pw.out))
    with pytest.raises(CheckpointError, match="missing"):
        load_state_dict(missing)


def test_big_endian_checkpoint(tmp_path):
    """A file whose byteorder record says 'big' stores every element big-endian."""
    state = {"f": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), "i": np.array([1, -2, 2**40]),
             "h": np.array([0.5, -3], np.float16), "b": np.array([True, False])}
    little = tmp_path / "little.pth"
    save_state_dict(state, little)
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name:
                a = list(state.values())[int(name.rsplit("/", 1)[1])]
                data = a.astype(a.dtype.newbyteorder(">")).tobytes()
            dst.writestr(name, data)
    got = load_state_dict(big)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and got[k].dtype.isnative and np.array_equal(got[k], v)
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(tmp_path / "odd.pth", "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"middle" if name.endswith("/byteorder") else src.read(name))
    with pytest.raises(CheckpointError, match="byteorder"):
        load_state_dict(tmp_path / "odd.pth")


# ------------------------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("fixture", [TINY, TENSORS])
def test_reader_writer_reader_round_trip_is_exact(fixture, tmp_path):
    first = load_state_dict(fixture)
    save_state_dict(first, tmp_path / "again.pth")
    second = load_state_dict(tmp_path / "again.pth")
    assert list(second) == list(first)
    for k in first:
        assert second[k].dtype == first[k].dtype and second[k].shape == first[k].shape, k
        assert np.array_equal(second[k], first[k]), k


def test_writer_layout_alignment_and_atomicity(tmp_path):
    state = {"a": np.arange(5, dtype=np.float64), "b": np.ones((2, 3), np.float32).T, "c": np.array(3, np.int64),
             "d": np.zeros((0, 2), np.float32), "e": np.arange(4, dtype=">i4")}
    path = tmp_path / "out.pth"
    path.write_bytes(b"old content")
    save_state_dict(state, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pth"]  # temp file renamed away
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[0] == "archive/data.pkl"
        assert set(names) == {"archive/data.pkl", "archive/byteorder", "archive/version"} | {
            f"archive/data/{i}" for i in range(5)}
        assert zf.read("archive/byteorder") == b"little" and zf.read("archive/version") == b"3\n"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert zf.read("archive/data/4") == np.arange(4, dtype="<i4").tobytes()
    for i in range(5):
        assert _data_offset(path, f"archive/data/{i}") % 64 == 0
    back = load_state_dict(path)
    for k, v in state.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype.newbyteorder("=") and np.array_equal(back[k], v)


def test_writer_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "keep.pth"
    save_state_dict({"a": np.ones(3, np.float32)}, path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_state_dict({"a": np.zeros(3, np.float32)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pth"]


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="complex64"):
        save_state_dict({"z": np.zeros(2, np.complex64)}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match="keys must be str"):
        save_state_dict({1: np.zeros(2, np.float32)}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match="np.ndarray"):
        save_state_dict({"a": [1.0, 2.0]}, tmp_path / "x.pth")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------ security

def _payload_pickle(module: str, name: str, arg: str, protocol_4: bool = False) -> bytes:
    """A pickle calling module.name(arg) when loaded (GLOBAL, or STACK_GLOBAL with protocol 4)."""
    pw = torch_io._PickleWriter()
    if protocol_4:
        pw.out = bytearray(pickle.PROTO + b"\x04")
        pw.str_(module)
        pw.str_(name)
        pw.out += pickle.STACK_GLOBAL
    else:
        pw.global_(module, name)
    pw.str_(arg)
    pw.out += pickle.TUPLE1 + pickle.REDUCE + pickle.STOP
    return bytes(pw.out)


def test_malicious_eval_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned_eval"
    code = f"open({str(marker)!r}, 'w').close()"
    payload = _payload_pickle("builtins", "eval", code)
    pickle.loads(payload)  # control: the payload is live with an ordinary unpickler
    assert marker.exists()
    marker.unlink()
    path = _zip_with_pickle(tmp_path / "evil.pth", payload)
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval") as err:
        load_state_dict(path)
    assert isinstance(err.value, pickle.UnpicklingError)
    assert not marker.exists()


@pytest.mark.parametrize("module,name,protocol_4", [("os", "system", False), ("posix", "system", False),
                                                    ("os", "system", True), ("builtins", "exec", True)])
def test_malicious_system_payloads_are_refused(tmp_path, module, name, protocol_4):
    marker = tmp_path / "pwned_system"
    arg = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w').close()"
    path = _zip_with_pickle(tmp_path / "evil.pth", _payload_pickle(module, name, arg, protocol_4))
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}"):
        load_state_dict(path)
    assert not marker.exists()


def test_payload_after_a_valid_tensor_is_refused(tmp_path):
    """A state_dict whose second value is a malicious call: refused, nothing executed."""
    marker = tmp_path / "pwned_late"
    pw = torch_io._PickleWriter()
    pw.empty_ordered_dict()
    pw.out += pickle.MARK
    pw.str_("ok")
    pw.tensor("FloatStorage", "0", 2, (2,), (1,))
    pw.str_("evil")
    pw.global_("builtins", "eval")
    pw.str_(f"open({str(marker)!r}, 'w').close()")
    pw.out += pickle.TUPLE1 + pickle.REDUCE + pickle.SETITEMS + pickle.STOP
    path = _zip_with_pickle(tmp_path / "late.pth", bytes(pw.out), {"data/0": np.ones(2, np.float32).tobytes()})
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("torch", "FloatStorage"), ("torch._utils", "_rebuild_tensor_v2"),
                                         ("collections", "OrderedDict")])
@pytest.mark.parametrize("slot_state", [False, True])
def test_build_cannot_mutate_allowed_globals(tmp_path, module, name, slot_state):
    """BUILD on an allow-listed global (e.g. to change FloatStorage's dtype for later loads) fails; no effect."""
    pw = torch_io._PickleWriter()
    pw.global_(module, name)
    if slot_state:
        pw.out += pickle.NONE
    pw.out += pickle.EMPTY_DICT
    pw.str_("code")
    pw.str_("i8")
    pw.out += pickle.SETITEM
    if slot_state:
        pw.out += pickle.TUPLE2
    pw.out += pickle.BUILD + pickle.STOP
    with pytest.raises(CheckpointError, match="cannot be unpickled"):
        load_state_dict(_zip_with_pickle(tmp_path / "build.pth", bytes(pw.out)))
    sd = load_state_dict(TINY)
    assert sd["classifier.fc.bias"].dtype == np.float32


def test_bad_persistent_id_is_rejected(tmp_path):
    pw = torch_io._PickleWriter()
    pw.str_("not-a-storage-tuple")
    pw.out += pickle.BINPERSID + pickle.STOP
    with pytest.raises(CheckpointError, match="persistent id"):
        load_state_dict(_zip_with_pickle(tmp_path / "pid.pth", bytes(pw.out)))


# ------------------------------------------------------------------------------------------------ bad files


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_file_gives_clear_error(tmp_path, keep):
    raw = TINY.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match="corrupt.*re-download"):
        load_state_dict(path)


@pytest.mark.parametrize("member", ["tiny_cct/data/0", "tiny_cct/data.pkl"])
def test_corrupted_member_gives_clear_error(tmp_path, member):
    raw = bytearray(TINY.read_bytes())
    raw[_data_offset(TINY, member) + 3] ^= 0xFF
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt.*re-download") as err:
        load_state_dict(path)
    assert member in str(err.value)


def test_legacy_and_foreign_formats_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="legacy.*Re-save"):
        load_state_dict(FIX / "legacy.pth")
    tar_path = tmp_path / "old.tar"
    with tarfile.open(tar_path, "w") as tf:
        info = tarfile.TarInfo("pickle")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(CheckpointError, match="legacy tar"):
        load_state_dict(tar_path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_bytes(b"hello world, not a checkpoint" * 30)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_state_dict(tmp_path / "text.pth")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match="data.pkl"):
        load_state_dict(tmp_path / "other.zip")
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------------ wrappers


def test_wrapped_checkpoint_with_module_prefix():
    _, expected, _, _ = _tiny_expected()
    sd = load_state_dict(FIX / "wrapped.pth")  # {'epoch', 'arch', 'state_dict': {'module.classifier.fc.*'}}
    assert list(sd) == ["classifier.fc.weight", "classifier.fc.bias"]
    for k in sd:
        assert np.array_equal(sd[k], expected[k])


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict", "model"])
def test_unwrap_wrapper_keys(wrapper):
    inner = {"module.a": np.ones(2), "module.b": np.zeros(1)}
    out = torch_io._unwrap_state_dict({"epoch": 3, wrapper: inner})
    assert list(out) == ["a", "b"]


def test_unwrap_rejects_non_state_dicts():
    mixed = {"module.a": np.ones(2), "b": np.ones(2)}
    assert list(torch_io._unwrap_state_dict(mixed)) == ["module.a", "b"]  # prefix only stripped if on every key
    with pytest.raises(CheckpointError, match="no state_dict found"):
        torch_io._unwrap_state_dict({"epoch": 3, "optimizer": [1]})
    with pytest.raises(CheckpointError, match=r"'step' \(int\)"):
        torch_io._unwrap_state_dict({"state_dict": {"w": np.ones(1), "step": 3}})
    with pytest.raises(CheckpointError, match="top-level object is a list"):
        torch_io._unwrap_state_dict([np.ones(1)])


# ------------------------------------------------------------------------------------------------ params


def test_to_params_checks_and_casts():
    keys, expected, _, _ = _tiny_expected()
    shapes = {k: expected[k].shape for k in reversed(keys)}
    state = {k: v.astype(np.float64) for k, v in expected.items()}
    params = torch_io.to_params(state, shapes)
    assert list(params) == list(shapes)
    for k in keys:
        assert params[k].dtype == np.float32 and params[k].flags.c_contiguous
        assert np.array_equal(params[k], expected[k])
    back = torch_io.from_params(params)
    assert list(back) == list(params) and all(np.array_equal(back[k], params[k]) for k in keys)
    assert all(back[k] is not params[k] for k in keys)


def test_to_params_reports_every_problem_at_once():
    keys, expected, _, _ = _tiny_expected()
    shapes = {k: expected[k].shape for k in keys}
    state = dict(expected)
    del state["classifier.fc.bias"], state["classifier.norm.weight"]
    state["classifier.extra.weight"] = np.ones(3, np.float32)
    state["classifier.fc.weight"] = np.ones((10, 16), np.float32)
    state["classifier.norm.bias"] = np.ones(16, np.int64)
    with pytest.raises(ValueError) as err:
        torch_io.to_params(state, shapes)
    msg = str(err.value)
    assert "missing keys (2): classifier.norm.weight, classifier.fc.bias" in msg
    assert "unexpected keys (1): classifier.extra.weight" in msg
    assert "classifier.fc.weight: expected shape (5, 16), found (10, 16)" in msg
    assert "classifier.norm.bias: expected a floating-point tensor, found dtype int64" in msg


def test_from_params_rejects_integer_arrays():
    with pytest.raises(ValueError, match="floating-point"):
        torch_io.from_params({"w": np.ones(2, np.int32)})


# ------------------------------------------------------------------------------------------------ parity


def test_fixture_logits_match_pytorch():
    """The NumPy CCT forward on the loaded tiny checkpoint reproduces PyTorch's eval-mode logits."""
    model = pytest.importorskip("minicct.model")
    cfg = model.CCTConfig(img_size=16, n_conv_layers=2, kernel_size=3, in_planes=8, embedding_dim=16, num_heads=2,
                          num_layers=2, mlp_ratio=2.0, num_classes=5, positional_embedding="learnable")
    _, _, x, want = _tiny_expected()
    params = torch_io.to_params(load_state_dict(TINY), model.param_shapes(cfg))
    logits, _ = model.forward(params, x, cfg, train=False)
    assert logits.shape == (3, 5)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


def test_writer_output_loads_in_real_torch(tmp_path):
    """Optional: torch.load(weights_only=True) reads save_state_dict's output, and the reference module accepts it."""
    torch = pytest.importorskip("torch")
    expected = _tensors_expected()
    save_state_dict(expected, tmp_path / "t.pth")
    loaded = torch.load(tmp_path / "t.pth", weights_only=True)
    assert list(loaded) == list(expected)
    for k, v in expected.items():
        t = loaded[k]
        assert isinstance(t, torch.Tensor) and tuple(t.shape) == v.shape and t.is_contiguous(), k
        got = t.to(torch.int32).numpy().astype(np.uint16) if t.dtype == torch.uint16 else t.numpy()
        assert got.dtype == v.dtype and np.array_equal(got, v), k
    keys, state, x, want = _tiny_expected()
    save_state_dict(state, tmp_path / "tiny.pth")
    spec = importlib.util.spec_from_file_location("make_torch_fixture", FIX / "make_torch_fixture.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    net = mk.CCT(**mk.TINY).eval()
    net.load_state_dict(torch.load(tmp_path / "tiny.pth", weights_only=True, mmap=True), strict=True)
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------ training checkpoints
# train_ckpt_cuda.pth: what timm's CheckpointSaver writes (epoch, arch, state_dict, optimizer, version, args as an
# argparse.Namespace, amp_scaler, state_dict_ema with 'module.' keys, metric), storage locations 'cuda:0'.


def _train_expected():
    e = np.load(FIX / "train_ckpt_expected.npz")
    keys = [str(k) for k in e["keys"]]
    return keys, {k: e["state_dict/" + k] for k in keys}, {k: e["ema/" + k] for k in keys}, json.loads(
        str(e["args_json"]))


def test_training_checkpoint_weights_exact_and_report():
    keys, sd_want, ema_want, args_want = _train_expected()
    raw = (FIX / "train_ckpt_cuda.pth").read_bytes()
    assert b"cuda:0" in raw and b"argparse" in raw                   # the fixture is what a GPU run writes
    state, info = torch_io.load_checkpoint_state(FIX / "train_ckpt_cuda.pth")
    assert list(state) == keys
    for k in keys:
        assert state[k].dtype == np.float32 and np.array_equal(state[k], sd_want[k]), k
    assert (info["arch"], info["epoch"], info["metric"], info["version"]) == ("cct_tiny", 299, 80.92, 2)
    assert info["weights"] == "'state_dict'" and info["n_tensors"] == len(keys)
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in info["args"].items()}
    assert args == args_want
    # the optimizer's moments (step, exp_avg, exp_avg_sq per parameter) and the EMA copy are skipped, not read
    assert info["skipped"] == {"optimizer": 3 * len(keys), "amp_scaler": 0, "state_dict_ema": len(keys)}
    assert info["storages_read"] == len(keys)
    assert info["report"].startswith("arch cct_tiny, epoch 299, metric 80.92; weights from 'state_dict' (31 tensors)")
    assert "not read: optimizer (93 tensors)" in info["report"] and "args: " in info["report"]


def test_training_checkpoint_ema_weights_with_module_prefix_stripped():
    keys, sd_want, ema_want, _ = _train_expected()
    state, info = torch_io.load_checkpoint_state(FIX / "train_ckpt_cuda.pth", ema=True)
    assert list(state) == keys and info["weights"] == "'state_dict_ema'" and info["stripped_prefix"] == "module."
    assert all(np.array_equal(state[k], ema_want[k]) for k in keys)
    assert not all(np.array_equal(ema_want[k], sd_want[k]) for k in keys)
    assert "state_dict" in info["skipped"]
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_state_dict(TINY, ema=True)


def test_optimizer_storages_are_never_read(monkeypatch):
    """Only the storages of the chosen state_dict are read from the zip (lazy persistent_load)."""
    read = []
    real = torch_io._read_storage  # storages are read by _read_storage (bounded, no second copy)
    monkeypatch.setattr(torch_read, "_read_storage", lambda zf, name, n, path: read.append(name) or real(zf, name, n, path))
    state, info = torch_io.load_checkpoint_state(FIX / "train_ckpt_cuda.pth")
    data = [n for n in read if "/data/" in n]
    assert len(data) == len(state) == info["storages_read"]
    with zipfile.ZipFile(FIX / "train_ckpt_cuda.pth") as zf:
        total = [n for n in zf.namelist() if "/data/" in n and "/.data/" not in n]
    assert len(total) == len(state) * 5  # state_dict, ema, and three optimizer slots per parameter


def test_namespace_becomes_an_inert_record():
    ns = torch_io.TrainingArgs()
    ns.__setstate__({"model": "cct_2_3x2_32", "lr": 0.1})
    assert ns.model == "cct_2_3x2_32" and ns.fields == {"model": "cct_2_3x2_32", "lr": 0.1}
    with pytest.raises(AttributeError):
        ns.model = "x"
    with pytest.raises(AttributeError):
        torch_io.TrainingArgs.fields = 3              # the class handed to the pickle cannot be altered
    with pytest.raises(CheckpointError):
        torch_io.TrainingArgs().__setstate__(["not", "a", "dict"])


def test_checkpoint_with_another_global_is_refused_naming_it():
    """train_ckpt_foreign.pth (written by torch.save) holds a types.SimpleNamespace instead of argparse.Namespace."""
    with pytest.raises(UnsafeCheckpointError, match=r"types\.SimpleNamespace"):
        torch_io.load_checkpoint_state(FIX / "train_ckpt_foreign.pth")


@pytest.mark.parametrize("module,name", [("argparse", "ArgumentParser"), ("torch.optim.adamw", "AdamW"),
                                         ("builtins", "getattr"), ("copyreg", "_reconstructor")])
def test_training_checkpoint_with_extra_global_is_refused(tmp_path, module, name):
    """A training checkpoint whose pickle also names any global outside the allow-list: refused, named."""
    pw = torch_io._PickleWriter()
    pw.out += pickle.EMPTY_DICT + pickle.MARK
    pw.str_("epoch")
    pw.int_(3)
    pw.str_("args")
    pw.global_("argparse", "Namespace")
    pw.out += pickle.EMPTY_TUPLE + pickle.NEWOBJ + pickle.EMPTY_DICT + pickle.BUILD
    pw.str_("sched")
    pw.global_(module, name)
    pw.out += pickle.SETITEMS + pickle.STOP
    path = _zip_with_pickle(tmp_path / "x.pth", bytes(pw.out))
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}"):
        torch_io.load_checkpoint_state(path)


def test_training_checkpoint_loads_in_torch_the_same():
    """Optional: torch itself reads the fixture to the same arrays (map_location='cpu' for the cuda tags)."""
    torch = pytest.importorskip("torch")
    ck = torch.load(FIX / "train_ckpt_cuda.pth", map_location="cpu", weights_only=False)
    state = load_state_dict(FIX / "train_ckpt_cuda.pth")
    assert all(np.array_equal(state[k], v.numpy()) for k, v in ck["state_dict"].items())
