"""The training loop: mini-batches, augmentation, AdamW or SGD, warm-up + cosine schedule, evaluation each
epoch, progress display, atomic checkpoints, resume, and Ctrl-C that saves before it exits.

Reproducible: every random stream (data order, augmentation, dropout/drop-path) is a child of one
np.random.SeedSequence(seed), and the generators' states are stored in the checkpoint, so the same seed on
the same machine gives the same loss trajectory, with or without an interruption and a resume.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import model as M
from .. import parallel
from ..datasets.base import Dataset, to_model_input
from ..layers.loss import smooth_targets, softmax_cross_entropy_forward
from .augment import mix_batch, random_crop_flip
from ..io.npz_checkpoint import load_checkpoint, save_checkpoint
from .optim import SGD, AdamW, cosine_lr
from .step import train_step


@dataclass
class TrainConfig:
    """Training hyper-parameters. Defaults follow the CCT recipe scaled down (AdamW, wd 0.05 on weights only,
    label smoothing 0.1, linear warm-up then cosine to min_lr)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"          # 'adamw' | 'sgd'
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9             # sgd only
    nesterov: bool = True             # sgd only
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    smoothing: float = 0.1
    augment: bool = True              # random crop (pad 4) + horizontal flip
    mixup: float = 0.0                # Beta alpha; 0 = off
    cutmix: float = 0.0
    seed: int = 0
    eval_batch_size: int = 500
    max_train: int | None = None      # use only the first n training images (quick runs)

    def __post_init__(self):
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")


@dataclass
class History:
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    step_losses: list = field(default_factory=list)


def evaluate(params, cfg, x_uint8, y, mean, std, batch_size=500):
    """Mean cross-entropy (no smoothing) and top-1 accuracy on uint8 images [N, H, W, 3]."""
    if len(y) == 0 or len(x_uint8) != len(y):
        raise ValueError(f"evaluate: {len(x_uint8)} images and {len(y)} labels; give at least one test image "
                         f"and one label per image")
    logits = parallel.predict(params, x_uint8, cfg, batch_size, transform=lambda b: to_model_input(b, mean, std))
    total_loss = 0.0
    for s in range(0, len(y), batch_size):                         # batch means, weighted by batch size
        loss, _ = softmax_cross_entropy_forward(logits[s:s + batch_size], y[s:s + batch_size])
        total_loss += loss * len(y[s:s + batch_size])
    n = max(len(y), 1)
    return total_loss / n, int((logits.argmax(1) == y).sum()) / n


class _Progress:
    """One updating status line on a terminal; a line every ~10 s otherwise (logs, CI)."""

    def __init__(self, stream=None, quiet=False):
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.quiet = quiet
        self.last = 0.0

    def update(self, text):
        if self.quiet:
            return
        now = time.time()
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150))
            self.stream.flush()
        elif now - self.last > 10:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = now

    def line(self, text):
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + " " * 150 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()


class _StopFlag:
    """Ctrl-C sets a flag checked between steps (so a step is never half-applied); a second Ctrl-C aborts."""

    def __init__(self):
        self.stop = False
        self.old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


def _rngs(seed):
    children = np.random.SeedSequence(seed).spawn(4)
    names = ("init", "order", "augment", "dropout")
    return {n: np.random.default_rng(c) for n, c in zip(names, children)}


def train(cfg: M.CCTConfig, data: Dataset, tc: TrainConfig, checkpoint: str | Path | None = None,
          resume: str | Path | None = None, quiet=False, stream=None, params=None):
    """Train `cfg` on `data` following `tc`. Returns (params, history, meta).

    checkpoint: path of the .npz written after every epoch (atomically) and on Ctrl-C.
    resume: a checkpoint written by this function: training continues where it stopped (same parameters,
    optimizer state, generator states, epoch and step), giving the same trajectory as an uninterrupted run.
    """
    if data.num_classes != cfg.num_classes:
        raise ValueError(f"dataset {data.name} has {data.num_classes} classes but the model has "
                         f"num_classes={cfg.num_classes}; build the config with num_classes={data.num_classes}")
    if data.img_size != cfg.img_size:
        raise ValueError(f"dataset {data.name} has {data.img_size}x{data.img_size} images but the model expects "
                         f"img_size={cfg.img_size}")
    prog = _Progress(stream, quiet)
    x_train, y_train = data.x_train, data.y_train
    if tc.max_train:
        x_train, y_train = x_train[:tc.max_train], y_train[:tc.max_train]
    n_train = len(y_train)
    if n_train == 0 or len(data.y_test) == 0:
        raise ValueError(f"dataset {data.name} has {n_train} training and {len(data.y_test)} test images; training "
                         f"needs at least one of each")
    steps_per_epoch = max(1, n_train // tc.batch_size)          # drop_last, as the reference loader
    rngs = _rngs(tc.seed)
    frozen = M.frozen_params(cfg)
    if tc.optimizer == "adamw":
        opt = AdamW(tc.lr, weight_decay=tc.weight_decay, frozen=frozen)
    else:
        opt = SGD(tc.lr, momentum=tc.momentum, nesterov=tc.nesterov, weight_decay=tc.weight_decay, frozen=frozen)
    history, start_epoch, start_step, perm, running = History(), 0, 0, None, None
    if resume is not None:
        params, history, start_epoch, start_step, perm, running = _restore(resume, cfg, tc, opt, rngs, data)
        prog.line(f"resumed from {resume} at epoch {start_epoch + 1}, step {start_step}")
    elif params is None:
        params = M.init_params(cfg, rngs["init"])
    else:
        M.check_params(params, cfg)
        bad = [k for k, v in params.items() if not np.isfinite(v).all()]
        if bad:
            raise ValueError(f"the starting parameters {bad[:3]}{' ...' if len(bad) > 3 else ''} hold NaN or inf; "
                             f"start from finite weights (an earlier checkpoint, or none)")

    from ..preprocess import record
    meta = {"dataset": data.name, "epochs": tc.epochs, "seed": tc.seed, "data_fingerprint": data_fingerprint(data),
            "preprocess": record(data)}                # mean, std, size, class names: travel with the weights
    running = dict(running) if running else {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}

    def save(epoch, step, perm_now, running_now):
        if checkpoint is None:
            return
        state = {"epoch": epoch, "step": step, "train_config": asdict(tc), "history": asdict(history),
                 "perm": None if perm_now is None else perm_now.tolist(), "running": running_now,
                 "rng": {k: r.bit_generator.state for k, r in rngs.items()}}
        m = dict(meta, train_state=state,
                 test_acc=history.test_acc[-1] if history.test_acc else None,
                 epochs_done=epoch)
        save_checkpoint(checkpoint, params, cfg, m, opt.state_dict())

    def lr_at(epoch, step):
        return cosine_lr(epoch + step / steps_per_epoch, tc.lr, tc.epochs, tc.warmup_epochs, tc.warmup_lr, tc.min_lr)

    run_shards = parallel.batch_parallel()          # the batch split over the usable CPUs (minicct.parallel)
    step = start_step
    with _StopFlag() as flag:
        for epoch in range(start_epoch, tc.epochs):
            t0 = time.time() - running["seconds"]
            if perm is None or step == 0:
                perm = rngs["order"].permutation(n_train)
            while step < steps_per_epoch:
                lr = lr_at(epoch, step)
                idx = perm[step * tc.batch_size:(step + 1) * tc.batch_size]
                xb, q = _batch(x_train, y_train, idx, data, cfg, tc, rngs["augment"])
                out = train_step(params, opt, xb, q, cfg, rngs["dropout"], lr, tc.smoothing,
                                 step_name=f"epoch {epoch + 1}, step {step + 1}", run_shards=run_shards)
                history.step_losses.append(out.loss)
                step += 1
                running["seen"] += len(idx)
                running["loss_sum"] += out.loss * len(idx)
                running["correct"] += int((out.logits.argmax(1) == y_train[idx]).sum())
                running["seconds"] = time.time() - t0
                prog.update(_status(epoch, step, steps_per_epoch, tc, running, lr))
                if flag.stop:
                    save(epoch, step, perm, dict(running))
                    prog.line(f"\ninterrupted at epoch {epoch + 1}, step {step}"
                              + (f"; checkpoint saved to {checkpoint} (resume with --resume {checkpoint})"
                                 if checkpoint else ""))
                    raise KeyboardInterrupt
            lr = lr_at(epoch, steps_per_epoch - 1)                 # the lr of the epoch's last step
            test_loss, test_acc = evaluate(params, cfg, data.x_test, data.y_test, data.mean, data.std,
                                           tc.eval_batch_size)
            seen = running["seen"]
            history.epoch.append(epoch + 1)
            history.train_loss.append(running["loss_sum"] / max(seen, 1))
            history.train_acc.append(running["correct"] / max(seen, 1))
            history.test_loss.append(test_loss)
            history.test_acc.append(test_acc)
            history.lr.append(lr)
            history.seconds.append(time.time() - t0)
            prog.line(f"{epoch + 1:5d} {history.train_loss[-1]:10.4f} {history.train_acc[-1]:9.3f} "
                      f"{test_loss:9.4f} {test_acc:8.3f} {lr:9.2e} {history.seconds[-1]:7.1f}s "
                      f"{seen / history.seconds[-1]:6.0f} img/s")
            step, perm = 0, None
            running = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            save(epoch + 1, 0, None, None)
    meta.update(test_acc=history.test_acc[-1] if history.test_acc else None, epochs_done=tc.epochs,
                history=asdict(history), train_config=asdict(tc))
    return params, history, meta


def data_fingerprint(data) -> str:
    """A cheap identity of a dataset (name, shapes, all labels, every ~256th image of each split): a resume
    on other images (another --dataset or --data-seed) is refused instead of silently continuing on them."""
    import hashlib
    h = hashlib.sha256(f"{data.name} {data.x_train.shape} {data.x_test.shape}".encode())
    for a in (data.y_train, data.y_test, data.x_train[::max(1, len(data.x_train) // 256)],
              data.x_test[::max(1, len(data.x_test) // 256)]):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _restore(resume, cfg, tc, opt, rngs, data=None):
    """State of an interrupted run from its checkpoint: parameters, optimizer state and generator states
    (restored in place), history, epoch, step, data order and the running sums of the interrupted epoch."""
    params, _, meta, opt_state = load_checkpoint(resume, expect_config=cfg)
    state = meta.get("train_state")
    if state is None:
        raise ValueError(f"{resume} holds no training state (it was not written by minicct.train.loop)")
    if data is not None and (meta.get("dataset", data.name) != data.name or meta.get(
            "data_fingerprint", data_fingerprint(data)) != data_fingerprint(data)):
        raise ValueError(f"{resume} was trained on {meta.get('dataset')} (images {meta.get('data_fingerprint')}), "
                         f"but this run gives {data.name} (images {data_fingerprint(data)}): other images. Resume "
                         f"with the same --dataset and --data-seed as the interrupted run")
    if state["train_config"] != asdict(tc):
        raise ValueError(f"{resume} was trained with other settings: {state['train_config']}; "
                         f"resume with the same TrainConfig")
    opt.load_state_dict(opt_state)
    for name, st in state["rng"].items():
        rngs[name].bit_generator.state = st
    perm = np.array(state["perm"], dtype=np.int64) if state.get("perm") is not None else None
    return params, History(**state["history"]), state["epoch"], state["step"], perm, state.get("running")


def _batch(x_train, y_train, idx, data, cfg, tc, rng):
    """The training batch idx: augmented (crop + flip), normalised, mixed (mixup / cutmix) -> (x [B, C, S, S], q [B, K])."""
    xb = x_train[idx]
    if tc.augment:
        xb = random_crop_flip(xb, rng)
    xb = to_model_input(xb, data.mean, data.std)
    q = smooth_targets(y_train[idx], cfg.num_classes, 0.0)
    return mix_batch(xb, q, rng, tc.mixup, tc.cutmix)


def _status(epoch, step, steps_per_epoch, tc, running, lr):
    """The progress line: position, running loss and accuracy, speed, time left."""
    seen = max(running["seen"], 1)
    ips = seen / max(running["seconds"], 1e-9)
    left = ((steps_per_epoch - step) + (tc.epochs - epoch - 1) * steps_per_epoch) * tc.batch_size / max(ips, 1e-9)
    return (f"epoch {epoch + 1}/{tc.epochs} step {step}/{steps_per_epoch} loss {running['loss_sum'] / seen:.3f} "
            f"acc {running['correct'] / seen:.3f} {ips:.0f} img/s lr {lr:.2e} time left {left / 60:.1f} min")


HEADER = f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'test loss':>9} {'test acc':>8} {'lr':>9} {'time':>8} {'speed':>11}"
