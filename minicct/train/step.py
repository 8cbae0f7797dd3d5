"""One training step of the CCT, the four lines a reader looks for:

    logits = model(x)                        model.forward(train=True)       x [N, C, S, S] -> [N, K]
    loss   = CE(logits, y, smoothing)        layers.loss                     soft targets y [N, K] or labels [N]
    grads  = d loss / d params               model.backward                  dict, keys of params
    params = optimizer(params, grads, lr)    train.optim (SGD / AdamW)       in place

They are the lines of `train_step` below. The step is serial and plain; batch parallelism is an engine passed
in (run_shards=minicct.parallel.batch_parallel(workers), as the training loop and the benchmark do): it runs
the first three lines on slices of the batch at once and sums the gradients. This module imports no engine.
Shape legend: N batch, C channels, S image side, K classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layers.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from ..model import backward, forward


@dataclass
class StepResult:
    """What one step produced: the loss (float, before the update), the logits [N, K] and the gradients."""

    loss: float
    logits: np.ndarray
    grads: dict


def train_step(params, optimizer, x, y, cfg, rng=None, lr=None, smoothing=0.0, step_name="step", run_shards=None):
    """forward -> loss -> backward -> optimizer, on one batch. Updates `params` in place.

    Inputs: params (dict), optimizer (train.optim.SGD or AdamW, holding its own state), x [N, C, S, S] float,
    y int labels [N] or soft targets [N, K], cfg, rng (np.random.Generator for dropout / drop-path),
    lr (None: the optimizer's), smoothing (label smoothing of the cross-entropy).
    step_name: how an error names this step (e.g. "epoch 3, step 17").
    run_shards: None (the batch at once) or an engine run_shards(grads_of, x, y, rng) that calls
    grads_of(x_shard, y_shard, rng_shard, share) on slices of the batch and returns the summed
    (loss, logits, grads) (minicct.parallel.batch_parallel: threads; equal to one worker's up to float32
    rounding, dropout masks included).
    Raises FloatingPointError, naming the step, when the loss or an updated parameter is not finite (the
    parameters are then already changed; reload the last checkpoint).
    Returns StepResult(loss, logits [N, K], grads).
    """
    def grads_of(x, y, rng, share):              # share: this slice's part of the batch mean (1.0: all of it)
        logits, cache = forward(params, x, cfg, train=True, rng=rng)                 # forward
        loss, loss_cache = softmax_cross_entropy_forward(logits, y, smoothing)        # loss
        grads = backward(softmax_cross_entropy_backward(share, loss_cache), cache)   # backward
        return loss, logits, grads

    loss, logits, grads = grads_of(x, y, rng, 1.0) if run_shards is None else run_shards(grads_of, x, y, rng)
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss became {loss} at {step_name}; lower the learning rate"
                                 + (f" (now {lr:.2e})" if lr is not None else ""))
    if lr is None:                                                                   # update
        optimizer.step(params, grads)
    else:
        optimizer.step(params, grads, lr)
    bad = [k for k, v in params.items() if not np.isfinite(v).all()]
    if bad:
        raise FloatingPointError(f"parameters {bad[:3]}{'...' if len(bad) > 3 else ''} became NaN or inf at "
                                 f"{step_name}; lower the learning rate"
                                 + (f" (now {lr:.2e})" if lr is not None else ""))
    return StepResult(float(loss), logits, grads)
