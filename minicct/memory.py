"""Keep freed memory inside the process between training steps and evaluation batches (glibc's malloc; Linux).

Why: a training step makes and frees the same large arrays every time (attention's [N, h, T, T] scores and
their gradient, the [N, T, F] MLP activations, ...). With glibc's defaults, a freed block larger than its mmap
threshold is given back to the operating system (munmap), and a heap whose free top exceeds the trim
threshold is shrunk; the next step's array is then fresh memory, and the kernel page-faults and zeroes it
page by page before NumPy can write it (several ms for a 30 MB array, about the time of the arithmetic on it).
`retain_freed_memory` raises both thresholds, so a freed block stays in the process's heap and the next step
reuses it. Peak memory does not grow (the same blocks are reused; measured with `python -m minicct.bench`:
VmHWM of the step unchanged); what changes is that the memory of the largest step is kept by the process until
it exits instead of being returned between steps.

    M_MMAP_THRESHOLD = 32 MB   blocks up to 32 MB come from the heap (glibc's maximum for this setting on
                               64-bit; larger blocks are still mmapped and returned)
    M_TRIM_THRESHOLD = 1 GB    the heap keeps up to 1 GB of freed memory at its top

The engine's training step (`parallel.batch_parallel`) and evaluation (`parallel.predict`, capture) call it; it acts once per process.
Measured on the paper-scale capture (`MINICCT_RETAIN_MEMORY=1` vs `0`, `python -m minicct.bench --snp-scale
paper --paper-images 512 --paper-readout-images 1000`, one run each): 27.1 vs 31.4 ms per image.
Opt out with the environment variable MINICCT_RETAIN_MEMORY=0 (read at that first call). Without glibc (macOS, Windows, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3          # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30

_STATE = {"done": False, "active": False}


def retain_freed_memory(enable: bool | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds (module docstring), once per process.

    enable: None -> unless the environment variable MINICCT_RETAIN_MEMORY is "0"; False -> do nothing.
    Returns True when the thresholds are (now or already) raised, False otherwise (opted out, no glibc,
    or mallopt refused).
    """
    if _STATE["done"]:
        return _STATE["active"]
    if enable is None:
        enable = os.environ.get("MINICCT_RETAIN_MEMORY", "1").strip() != "0"
    _STATE["done"] = True
    if not enable or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _STATE["active"] = ok
    return ok
