"""One training step of the CCT, the four lines a reader looks for:

    logits = model(x)                        model.forward(train=True)       x [N, C, S, S] -> [N, K]
    loss   = CE(logits, y, smoothing)        layers.loss                     soft targets y [N, K] or labels [N]
    grads  = d loss / d params               model.backward                  dict, keys of params
    params = optimizer(params, grads, lr)    train.optim (SGD / AdamW)       in place

The first three run in minicct.parallel.shard_grads, on `workers` slices of the batch at once (threads, one
BLAS thread each; gradients summed; one worker = exactly these lines on the whole batch).

Used by the training loop (train/loop.py), the benchmark and the lessons. Memory: minicct/memory.py (freed
arrays stay in the process from one step to the next).
Shape legend: N batch, C channels, S image side, K classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..parallel import step_grads
from ..memory import retain_freed_memory


@dataclass
class StepResult:
    """What one step produced: the loss (float, before the update), the logits [N, K] and the gradients."""

    loss: float
    logits: np.ndarray
    grads: dict


def train_step(params, optimizer, x, y, cfg, rng=None, lr=None, smoothing=0.0, step_name="step", workers=None):
    """forward -> loss -> backward -> optimizer, on one batch. Updates `params` in place.

    Inputs: params (dict), optimizer (train.optim.SGD or AdamW, holding its own state), x [N, C, S, S] float,
    y int labels [N] or soft targets [N, K], cfg, rng (np.random.Generator for dropout / drop-path),
    lr (None: the optimizer's), smoothing (label smoothing of the cross-entropy).
    step_name: how an error names this step (e.g. "epoch 3, step 17").
    workers: batch-parallel workers (None: minicct.parallel.default_workers(), the usable CPUs); the result
    equals one worker's up to float32 rounding, dropout masks included.
    Raises FloatingPointError, naming the step, when the loss or an updated parameter is not finite (the
    parameters are then already changed; reload the last checkpoint).
    Returns StepResult(loss, logits [N, K], grads).
    The first call raises glibc's malloc thresholds so that steps reuse freed memory (minicct.memory;
    MINICCT_RETAIN_MEMORY=0 opts out).
    """
    retain_freed_memory()
    loss, logits, grads = step_grads(params, x, y, cfg, rng, smoothing, workers)   # forward, loss, backward
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} at {step_name}; lower the learning rate"
                                 + (f" (now {lr:.2e})" if lr is not None else ""))
    if lr is None:
        optimizer.step(params, grads)
    else:
        optimizer.step(params, grads, lr)
    bad = [k for k, v in params.items() if not np.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"parameters {bad[:3]}{'...' if len(bad) > 3 else ''} became NaN or inf at "
                                 f"{step_name}; lower the learning rate"
                                 + (f" (now {lr:.2e})" if lr is not None else ""))
    return StepResult(float(loss), logits, grads)
