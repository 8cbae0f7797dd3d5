"""Read and write PyTorch checkpoints (`torch.save` zip format) with only the standard library and NumPy.

The code lives in two modules; this one re-exports both, so `from minicct.io.torch_io import X` keeps working:
    minicct/io/torch_read.py   the reader: zip / legacy parsing, restricted unpickling, tensor reconstruction,
                               training checkpoints, load_state_dict, load_checkpoint_state, to_params
    minicct/io/torch_write.py  the writer: save_state_dict, from_params

Public API:
    load_state_dict(path, ema=False) -> dict[str, np.ndarray]      (ordered as in the file)
    load_checkpoint_state(path, ema=False) -> (state, info)       (info: arch, epoch, metric, args, ..., report)
    save_state_dict(state, path)                          (torch.load(path, weights_only=True) reads it back)
    to_params(state, expected_shapes) -> dict[str, np.ndarray]   (checked names/shapes, float32)
    from_params(params) -> dict[str, np.ndarray]
    CheckpointError (ValueError), UnsafeCheckpointError (pickle.UnpicklingError)
"""
from __future__ import annotations

from .torch_read import (  # noqa: F401
    CheckpointError,
    UnsafeCheckpointError,
    TrainingArgs,
    describe,
    load_checkpoint_state,
    load_state_dict,
    to_params,
    check_finite,
)
from .torch_write import (  # noqa: F401
    save_state_dict,
    from_params,
)

# internals, re-exported for code and tests that reach them as torch_io._name (patch them on torch_read /
# torch_write: that is where the code looks them up)
from .torch_read import (  # noqa: F401
    _STORAGE_CODES,
    _TORCH_DTYPE_CODES,
    _Frozen,
    _StorageType,
    _TorchDtype,
    _Callable,
    _Budget,
    _Storage,
    _stored_dtype,
    _MAX_EXPANDED,
    _contiguous_strides,
    _tensor_from_storage,
    _StorageRef,
    _TensorRef,
    _is_tensor,
    _rebuild_tensor,
    _rebuild_tensor_v2,
    _rebuild_tensor_v3,
    _rebuild_parameter,
    _rebuild_parameter_with_state,
    _InertType,
    _allowed_globals,
    _ALLOWED,
    _RestrictedUnpickler,
    _CORRUPT,
    _RESAVE,
    _open_archive,
    _read_member,
    _find_prefix,
    _MAX_PKL_BYTES,
    _MAX_DEFLATE_RATIO,
    _COPY_SLACK,
    _check_sizes,
    _read_storage,
    _materialise,
    _MAX_COUNT_VISITS,
    _count_tensors,
    _read_archive,
    _WRAPPER_KEYS,
    _EMA_KEYS,
    _INFO_KEYS,
    _unwrap_state_dict,
)
from .torch_write import (  # noqa: F401
    _WRITE_STORAGE,
    _WRITE_V3,
    _ALIGN,
    _PickleWriter,
    _aligned_extra,
)

from . import torch_read as _reader, torch_write as _writer  # noqa: E402

__all__ = _reader.__all__ + _writer.__all__
