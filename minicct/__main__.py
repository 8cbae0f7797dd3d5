"""Command line: python -m minicct {train, evaluate, snp, snp-arrays, replicate, export, info, cache} ... (each with --help)."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path


# Default recipes. The reference CCT configs use AdamW (lr 5e-4 .. 6e-4, weight decay 0.05 .. 0.06) for 300+
# epochs; for the few-minute classroom run SGD with Nesterov momentum is the default, because with AdamW
# the classroom model sat for epochs at the colour-only solution of the embedded dataset (see lesson 02).
REFERENCE_RECIPE = dict(optimizer="adamw", lr=5.5e-4, weight_decay=0.06)
CLASSROOM_RECIPE = dict(optimizer="sgd", lr=0.05, weight_decay=5e-4)


# ---------------------------------------------------------------------------------------------- validators
# argparse `type=` functions: a bad number stops the command before any work, with a message naming the
# option's range (argparse prefixes the option name: "argument --lr: must be a finite number > 0, got 'nan'").

def _number(text, kind):
    try:
        v = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def _ranged(kind, lo=None, hi=None, lo_open=False, hi_open=False, what=""):
    def check(text):
        v = _number(text, kind)
        if (lo is not None and (v < lo or (lo_open and v == lo))) or \
                (hi is not None and (v > hi or (hi_open and v == hi))):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v
    check.__name__ = what  # argparse shows it in "invalid <name> value" messages
    return check


positive_int = _ranged(int, lo=1, what="an integer >= 1")
nonneg_int = _ranged(int, lo=0, what="an integer >= 0")
positive_float = _ranged(float, lo=0, lo_open=True, what="a finite number > 0")
nonneg_float = _ranged(float, lo=0, what="a finite number >= 0")
fraction = _ranged(float, lo=0, hi=1, what="a number in [0, 1]")
smoothing_fraction = _ranged(float, lo=0, hi=1, hi_open=True, what="a number in [0, 1)")
image_size = _ranged(int, lo=8, hi=1024, what="an integer in 8..1024")


def _modes(text):
    """--modes: a comma-separated subset of flat,mean,seqpool (returned normalised, as text)."""
    modes = [m.strip() for m in text.split(",")]
    bad = [m for m in modes if m not in ("flat", "mean", "seqpool")]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"read-out modes must be a comma-separated subset of flat,mean,seqpool; "
                                         f"got {text!r}")
    return ",".join(modes)


def _check_output_file(path, what):
    """Before any work: a file can be written at `path` (not a folder, no file in the way, folder writable)."""
    from .io.atomic import check_target
    try:
        return check_target(path)
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be written: {e}") from e


def _check_output_dir(path, what):
    """Before any work: `path` is (or can become) a writable folder."""
    import tempfile
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be written: {e}") from e
    return path


def _dataset_for(args, checkpoint=None) -> str:
    """--dataset, with "auto" resolved: the committed checkpoints' own images (resources.SHIPPED_DATA), else embedded."""
    if args.dataset != "auto":
        return args.dataset
    from .resources import SHIPPED_DATA
    return SHIPPED_DATA.get(Path(str(checkpoint)).name, "embedded") if checkpoint else "embedded"


def _dataset_kwargs(args, model_img_size=None, name=None):
    kw, name = {}, name or args.dataset
    if name == "flowers102":
        kw["img_size"] = args.img_size or 64
    if name.startswith("folder:"):
        kw["img_size"] = args.img_size or model_img_size or 32
    if name == "embedded":
        kw["seed"] = args.data_seed
    return kw


def _dataset_name(text):
    """--dataset value: a named dataset, npz:PATH or folder:PATH."""
    from .datasets import NAMES
    if text == "auto" or text in NAMES or (text.startswith(("npz:", "folder:")) and len(text.split(":", 1)[1]) > 0):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(NAMES)}, npz:PATH or folder:PATH")


def _add_data_args(p, default="embedded"):
    auto = ("auto (default): the images of a committed checkpoint (cifar10_classroom*: the real CIFAR-10 sample "
            "cifar10_sample; classroom*: embedded), embedded for any other; " if default == "auto" else
            "embedded (default, offline), ")
    p.add_argument("--dataset", default=default, type=_dataset_name, metavar="NAME",
                   help=auto + "cifar10_sample (4,000 real photographs, offline), cifar10, cifar100, flowers102, "
                        "npz:PATH (your arrays: x_train, y_train, x_test, y_test [, class_names, mean, std]) or "
                        "folder:PATH (PATH/{train,test}/<class>/*.png|jpg|jpeg, resized to the model's size)")
    p.add_argument("--data-seed", type=nonneg_int, default=0, help="seed of the embedded dataset (default 0)")
    p.add_argument("--img-size", type=image_size, default=None,
                   help="image size after resizing: Flowers-102 (default 64) and folder:PATH (default: the model's)")
    p.add_argument("--no-download", action="store_true", help="never download; fail if the files are missing")


def _null_draws_default():
    from .analysis.nulls import NULL_DRAWS
    return NULL_DRAWS


def _add_null_args(p):
    """--seeds and --null-draws of snp / snp-arrays."""
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="read-out seeds --seed, --seed + 1, ...: every quantity as mean [95 %% interval] over them "
                        "(>= 2 for intervals; default 1)")
    p.add_argument("--null-draws", type=nonneg_int, default=_null_draws_default(),
                   help="label-permutation draws per read-out seed: every quantity beside its value with shuffled "
                        "labels (0 = no null; default %(default)s, docs/nulls.md)")


def _add_checkpoint_args(p, default=None, what="--checkpoint"):
    """--checkpoint (any kind) and the options that say how to read it: --heads, --model, --ema."""
    if what == "--checkpoint":
        p.add_argument("--checkpoint", default=default,
                       help="a minicct .npz, a plain PyTorch .pth state_dict, or a timm/SHI-Labs training "
                            "checkpoint (model_best.pth.tar, checkpoint-299.pth.tar)" +
                            (f" (default {default})" if default else ""))
    p.add_argument("--heads", type=positive_int, default=None,
                   help="attention heads of a .pth whose arch is unknown (heads cannot be read from tensor shapes)")
    if what == "--checkpoint":
        p.add_argument("--model", default=None,
                       help="variant name to build for a .pth (e.g. cct_7_3x1_32; classes come from the file)")
    p.add_argument("--ema", action="store_true", help="use a training checkpoint's state_dict_ema weights")


def _load_any(path, args, model=None):
    """load_any_checkpoint with the CLI options; prints the one-line report. Returns (params, cfg, meta)."""
    from .io.checkpoints import load_any_checkpoint
    from .io.torch_io import UnsafeCheckpointError
    from .resources import resolve_shipped
    found = resolve_shipped(path)                       # data/checkpoints/... also after `pip install`
    if str(found) != str(path):
        print(f"{path}: not in the current folder; using the one shipped with minicct: {found}", flush=True)
        path = found
    try:
        params, cfg, meta = load_any_checkpoint(path, heads=args.heads, model=model, ema=args.ema)
    except UnsafeCheckpointError as e:      # a pickle.UnpicklingError: reported like every other bad input
        raise ValueError(f"{path}: {e}") from e
    print(meta["report"], flush=True)
    return params, cfg, meta


def _load_model(args):
    """The model of evaluate / snp: --pretrained NAME or --checkpoint FILE (any kind)."""
    if getattr(args, "pretrained", None):
        from .io.pretrained import load_pretrained
        return load_pretrained(args.pretrained, download=not args.no_download,
                               allow_http=getattr(args, "allow_http", False))
    if not args.checkpoint:
        raise ValueError("give --checkpoint PATH (.npz, .pth or a training checkpoint) or --pretrained NAME")
    return _load_any(args.checkpoint, args, model=args.model)


def _check_data_fits(data, cfg, source):
    if data.num_classes != cfg.num_classes or data.img_size != cfg.img_size:
        raise ValueError(f"the model ({source}) expects {cfg.num_classes} classes at {cfg.img_size}px, the dataset "
                         f"{data.name} has {data.num_classes} classes at {data.img_size}px; use a dataset with "
                         f"{cfg.num_classes} classes (its images are resized only for folder:PATH)")


def _use_model_stats(data, cfg, meta):
    """Normalise `data` as the model was trained (preprocess.choose_stats): the checkpoint's recorded mean/std
    unless the dataset states its own; prints which. Class names recorded with the model are checked too."""
    from .preprocess import choose_stats, from_meta
    pre = from_meta(meta, cfg)
    data.mean, data.std, note = choose_stats(data, pre)
    print(note, flush=True)
    names = (pre or {}).get("class_names")
    if names and len(names) == data.num_classes and list(names) != [str(c) for c in data.class_names]:
        print(f"note: the model was trained with classes {_preview(names)}; {data.name} names them "
              f"{_preview(data.class_names)} (labels are matched by index)", flush=True)
    return pre


def _preview(names, n=4):
    names = [str(c) for c in names]
    return ", ".join(names[:n]) + (f", ... ({len(names)})" if len(names) > n else "")


def _init_from(args, params, icfg, cfg, data):
    """train --init FILE: parameters to start from. A different number of classes gets a fresh fc (as the
    reference's fc_check); any other difference is an error listing every key and shape."""
    from . import model as M
    params = dict(params)
    if icfg.img_size != cfg.img_size:
        raise ValueError(f"{args.init} was trained at {icfg.img_size}px, the dataset {data.name} is "
                         f"{cfg.img_size}px; fine-tune at the same size (resizing positional embeddings is not "
                         f"supported)")
    new = M.init_params(cfg, args.seed)
    if icfg.num_classes != cfg.num_classes:
        print(f"--init: {icfg.num_classes} classes in {args.init}, {cfg.num_classes} in {data.name}: "
              f"classifier.fc starts afresh", flush=True)
        for k in ("classifier.fc.weight", "classifier.fc.bias"):
            params[k] = new[k]
    M.check_params(params, cfg)
    return {k: params[k] for k in new}


def _parser_train(sub):
    """The `train` sub-command: its parser and options (handled by cmd_train)."""
    p = sub.add_parser("train", help="train a CCT", description="Train a CCT variant on a dataset; writes an "
                       ".npz checkpoint after every epoch (Ctrl-C saves and exits; --resume continues).")
    p.add_argument("--model", default=None, help="variant: classroom (default), cct_2_3x2_32, cct_7_3x1_32, ... "
                   "(python -m minicct info lists them)")
    p.add_argument("--config-json", default=None, help='JSON of CCTConfig overrides, e.g. \'{"num_layers": 2}\'')
    _add_data_args(p)
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--optimizer", default=None, choices=["adamw", "sgd"],
                   help="default: sgd (Nesterov 0.9) for classroom, adamw (the reference's) otherwise")
    p.add_argument("--lr", type=positive_float, default=None, help="default: 0.05 for sgd/classroom, 5.5e-4 for adamw")
    p.add_argument("--weight-decay", type=nonneg_float, default=None, help="default: 5e-4 classroom, 0.06 otherwise")
    p.add_argument("--warmup", type=nonneg_float, default=0.5, help="warm-up epochs (default 0.5)")
    p.add_argument("--smoothing", type=smoothing_fraction, default=0.1, help="label smoothing (default 0.1)")
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--mixup", type=nonneg_float, default=0.0, help="mixup Beta alpha (0 = off)")
    p.add_argument("--cutmix", type=nonneg_float, default=0.0, help="cutmix Beta alpha (0 = off)")
    p.add_argument("--max-train", type=positive_int, default=None, help="use only the first N training images")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--out", default="runs/model.npz", help="checkpoint path (default runs/model.npz)")
    p.add_argument("--resume", default=None, help="continue from this checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (default: refuse)")
    p.add_argument("--init", default=None, help="fine-tune: start from this checkpoint's weights (.npz, .pth or a "
                   "training checkpoint; its config is used; a different class count gets a fresh fc)")
    _add_checkpoint_args(p, what="--init")
    p.add_argument("--plot", default=None, help="write the loss/accuracy plot (PNG) here")
    p.set_defaults(func=cmd_train)


def cmd_train(args):
    from . import model as M
    from .datasets import load
    from .plots import plot_history
    from .io.npz_checkpoint import save_checkpoint
    from .train.loop import HEADER, TrainConfig, train

    out = _check_output_file(args.out, "--out")           # before any work: never lose a run to its path
    if out.exists() and not args.overwrite and not (args.resume and Path(args.resume).resolve() == out.resolve()):
        raise ValueError(f"--out {out} already holds a file; refusing to replace it. Continue that run with "
                         f"--resume {out}, pass --overwrite to replace it, or choose another --out")
    if args.plot:
        _check_output_file(args.plot, "--plot")
    if args.resume and not Path(args.resume).is_file():
        raise FileNotFoundError(f"--resume {args.resume}: no such checkpoint")
    overrides = {}
    if args.config_json:
        try:
            overrides = json.loads(args.config_json)
        except ValueError as e:
            raise ValueError(f"--config-json is not valid JSON ({e}); e.g. '{{\"num_layers\": 2}}'") from e
        if not isinstance(overrides, dict):
            raise ValueError(f"--config-json must be a JSON object of CCTConfig fields, got {args.config_json!r}")
    init = None
    try:
        if args.init:
            params0, icfg, _ = _load_any(args.init, args, model=args.model)
            data = load(args.dataset, download=not args.no_download, **_dataset_kwargs(args, icfg.img_size))
            cfg = M.CCTConfig.from_dict(dict(icfg.to_dict(), num_classes=data.num_classes, **overrides))
            init = _init_from(args, params0, icfg, cfg, data)
            args.model = args.model or "init"
        else:
            args.model = args.model or "classroom"
            data = load(args.dataset, download=not args.no_download, **_dataset_kwargs(args))
            cfg = M.get_config(args.model, num_classes=data.num_classes, img_size=data.img_size, **overrides)
    except TypeError as e:
        raise ValueError(f"--config-json: {e}") from e
    if args.max_train is not None and args.max_train > len(data.y_train):
        raise ValueError(f"--max-train {args.max_train} but {data.name} has {len(data.y_train)} training images")
    recipe = CLASSROOM_RECIPE if args.model == "classroom" else REFERENCE_RECIPE
    optimizer = args.optimizer or recipe["optimizer"]
    lr = args.lr if args.lr is not None else recipe["lr"]
    wd = args.weight_decay if args.weight_decay is not None else recipe["weight_decay"]
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer, lr=lr,
                     weight_decay=wd, warmup_epochs=args.warmup, smoothing=args.smoothing,
                     augment=not args.no_augment, mixup=args.mixup, cutmix=args.cutmix, seed=args.seed,
                     max_train=args.max_train)
    print(f"model {args.model}: {M.count_params(cfg):,} parameters, {cfg.seq_len} tokens, "
          f"{cfg.num_layers} encoders x {cfg.num_heads} heads, D={cfg.embedding_dim}")
    print(f"data {data.name}: {len(data.y_train)} train / {len(data.y_test)} test images, {data.num_classes} classes")
    print(HEADER)
    t0 = time.time()
    try:
        params, hist, meta = train(cfg, data, tc, checkpoint=out, resume=args.resume,
                                   params=None if args.resume else init)
    except KeyboardInterrupt:
        return 130
    meta.update(model=args.model, seconds=round(time.time() - t0, 1), command=" ".join(sys.argv))
    if args.init:
        meta["init"] = str(args.init)
    save_checkpoint(out, params, cfg, meta)
    print(f"test accuracy {100 * meta['test_acc']:.2f}% after {tc.epochs} epochs ({meta['seconds']:.0f} s)")
    print(f"checkpoint: {out}")
    if args.plot:                                          # after the checkpoint: a failing plot loses nothing
        print(f"plot: {plot_history(hist, args.plot, f'{args.model} on {data.name}')}")
    return 0


def _parser_evaluate(sub):
    """The `evaluate` sub-command: its parser and options (handled by cmd_evaluate)."""
    p = sub.add_parser("evaluate", help="test accuracy of a checkpoint or of official weights")
    _add_checkpoint_args(p)
    p.add_argument("--pretrained", default=None, help="official CCT weights, e.g. cct_7_3x1_32_c100 "
                   "(downloaded once over HTTPS and cached)")
    p.add_argument("--allow-http", action="store_true", help="with --pretrained: also try the plain-HTTP mirror "
                   "(unauthenticated; the file is still checked by its tensors and sha256 record)")
    _add_data_args(p, default="auto")
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N test images")
    p.add_argument("--out", default="runs/evaluate", help="folder for evaluation.json (top-1, top-5, per-class "
                   "accuracy, confusion matrix) and confusion.png (default runs/evaluate; '' writes nothing)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args):
    from . import model as M
    from .datasets import load

    params, cfg, meta = _load_model(args)
    args.dataset = _dataset_for(args, None if args.pretrained else args.checkpoint)
    out = _check_output_dir(args.out, "--out") if args.out else None
    data = load(args.dataset, download=not args.no_download, **_dataset_kwargs(args, cfg.img_size))
    _check_data_fits(data, cfg, args.pretrained or args.checkpoint)
    _use_model_stats(data, cfg, meta)
    x, y = data.x_test, data.y_test
    if args.limit is not None:
        if args.limit > len(y):
            raise ValueError(f"--limit {args.limit} but {data.name} has {len(y)} test images")
        x, y = x[:args.limit], y[:args.limit]
    from .io.pretrained import estimate_eval_seconds, format_seconds
    estimate = format_seconds(estimate_eval_seconds(cfg, len(y), args.batch_size))
    print(f"evaluating {len(y)} images, estimated {estimate} ...", flush=True)
    t0 = time.time()
    from .datasets import to_model_input
    from .evaluation import format_metrics, metrics, plot_confusion
    logits = M.predict(params, x, cfg, args.batch_size, transform=lambda b: to_model_input(b, data.mean, data.std))
    m = metrics(logits, y, cfg.num_classes)
    print(f"{data.name} test: {len(y)} images, loss {m['loss']:.4f}, top-1 accuracy {100 * m['top1']:.2f}%, "
          f"top-{m['k']} {100 * m['topk']:.2f}% ({time.time() - t0:.1f} s)")
    print(format_metrics(m, data.class_names).split("\n", 1)[1])
    if out is not None:
        from .io.atomic import atomic_write_text
        res = out / "evaluation.json"
        atomic_write_text(res, json.dumps({
            "command": " ".join(sys.argv), "dataset": data.name, "n": m["n"], "loss": m["loss"], "top1": m["top1"],
            f"top{m['k']}": m["topk"], "class_names": [str(c) for c in data.class_names],
            "per_class_accuracy": [None if a != a else float(a) for a in m["per_class"]],
            "support": m["support"].tolist(), "confusion": m["confusion"].tolist(),
            "mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std]}, indent=1) + "\n")
        print(f"results: {res}")
        print(f"figure: {plot_confusion(m['confusion'], data.class_names, out / 'confusion.png')}")
    if meta.get("test_acc") is not None:
        print(f"recorded in the checkpoint: {100 * meta['test_acc']:.2f}%")
    if meta.get("published_top1") is not None:
        print(f"published top-1 of these weights: {meta['published_top1']:.2f}%")
    if meta.get("checkpoint_metric") is not None:
        print(f"metric recorded in the training checkpoint (epoch {meta.get('epoch', '?')}): "
              f"{meta['checkpoint_metric']:.4g}")
    return 0


def _parser_snp(sub):
    """The `snp` sub-command: its parser and options (handled by cmd_snp)."""
    p = sub.add_parser("snp", help="the single-nodal-performance analysis of a checkpoint",
                       description="Per-encoder read-outs, node field matrices, clusters, noise and SNR.")
    _add_checkpoint_args(p, default="data/checkpoints/cifar10_classroom.npz")
    p.add_argument("--pretrained", default=None, help="analyse official CCT weights instead")
    p.add_argument("--allow-http", action="store_true", help="with --pretrained: also try the plain-HTTP mirror")
    _add_data_args(p, default="auto")
    p.add_argument("--site", default="out", choices=["out", "mha_heads", "mha_out", "ff_hidden", "all"])
    p.add_argument("--modes", type=_modes, default="flat,mean,seqpool",
                   help="read-out modes, comma separated: flat,mean,seqpool")
    p.add_argument("--epochs", type=positive_int, default=10, help="read-out training epochs (default 10)")
    p.add_argument("--threshold", type=fraction, default=0.3, help="threshold on V/max (default 0.3, authors')")
    p.add_argument("--n-train", type=positive_int, default=None, help="training images for the read-outs (default all)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="(first) read-out seed")
    _add_null_args(p)
    p.add_argument("--out", default="runs/snp", help="folder for the results (snp_results.json) and figures")
    p.add_argument("--memory-gb", type=positive_float, default=5.0,
                   help="memory for captured activations; less means more forward passes (default 5)")
    p.set_defaults(func=cmd_snp)


def cmd_snp(args):
    import numpy as np

    from .analysis.nulls import group_agreement
    from .analysis.report import run_snp
    from .datasets import load

    out = _check_output_dir(args.out, "--out")            # before the analysis, not after it
    params, cfg, meta = _load_model(args)
    args.dataset = _dataset_for(args, None if args.pretrained else args.checkpoint)
    data = load(args.dataset, download=not args.no_download, **_dataset_kwargs(args, cfg.img_size))
    _check_data_fits(data, cfg, args.pretrained or args.checkpoint)
    _use_model_stats(data, cfg, meta)
    if args.n_train is not None and args.n_train > len(data.y_train):
        raise ValueError(f"--n-train {args.n_train} but {data.name} has {len(data.y_train)} training images")
    if args.n_train is not None and len(np.unique(data.y_train[:args.n_train])) < data.num_classes:
        raise ValueError(f"--n-train {args.n_train}: the first {args.n_train} training images do not cover all "
                         f"{data.num_classes} classes; the read-outs need every class (use more images)")
    sites = ("mha_heads", "mha_out", "ff_hidden", "out") if args.site == "all" else (args.site,)
    modes = tuple(args.modes.split(","))
    seeds = list(range(args.seed, args.seed + args.seeds))
    sweep = None
    if args.seeds == 1 and args.null_draws == 0:           # one seed, no null: the plain analysis
        rep = run_snp(params, cfg, data, sites=sites, modes=modes, epochs=args.epochs,
                      threshold=args.threshold, n_train=args.n_train, seed=args.seed, out_dir=None,
                      max_capture_bytes=args.memory_gb * 1e9)
    else:
        from .analysis.nulls import run_snp_with_null
        rep, sweep = run_snp_with_null(params, cfg, data, sites=sites, modes=modes, epochs=args.epochs,
                                       threshold=args.threshold, n_train=args.n_train, seeds=seeds,
                                       null_draws=args.null_draws, max_capture_bytes=args.memory_gb * 1e9)
    print()
    print(rep.format_table())
    if sweep is not None:
        _print_sweep(sweep, seeds)
    results = out / "snp_results.json"                    # the numbers first: a failing figure cannot lose them
    from .io.atomic import atomic_write_text
    table = {k: v.tolist() for k, v in rep.table().items()}
    record = {"command": " ".join(sys.argv), "table": table, "seconds": rep.seconds}
    if sweep is not None:
        from .analysis.replicate import _jsonable
        record.update(table_seed=seeds[0], sweep=_jsonable(sweep.to_dict()))
    atomic_write_text(results, json.dumps(record, indent=1) + "\n")
    print(f"results: {results}")
    if data.groups:
        last = [r for r in rep.results if r.mode == "flat" and r.depth == cfg.num_layers] or rep.results
        agree = group_agreement([c for r in last for node in r.stats.clusters for c in node], data.groups)
        for g, a in agree.items():
            print(f"multi-label clusters inside one '{g}' group: {100 * a['inside']:.1f}% of {a['n']} "
                  f"(chance {100 * a['chance']:.1f}%)")
    from . import plots
    rep.figures = plots.snp_figures(rep, out, sweep=sweep)
    for f in rep.figures:
        print(f"figure: {f}")
    return 0


#: the quantities printed beside their null by snp / snp-arrays (every one is in the JSON)
NULL_TABLE = ("accuracy", "clusters_per_node", "cluster_size", "labels_in_clusters", "noise", "signal", "snr",
              "snr_a", "snr_b", "snr_c", "snr_d", "single_node_accuracy", "single_node_top_fraction")


def _print_sweep(sweep, seeds):
    """The value / null / excess tables of a NullSweep (and the null's variance split with >= 2 seeds and draws)."""
    from .analysis.nulls import variance_table
    print(f"\nEvery quantity over {len(seeds)} read-out seed(s) ({seeds[0]}..{seeds[-1]}): mean [95 % interval], "
          f"beside its label-permutation null (labels shuffled over the training and the test images, same seeds and "
          f"recipe; {sweep.draws} draw(s) per seed) and the excess over it (docs/nulls.md).")
    if not sweep.draws:
        print("(--null-draws 0: no null)")
    for mode in sweep.modes:
        print()
        print(sweep.table(mode, NULL_TABLE))
    if len(seeds) >= 2 and sweep.draws >= 2:
        for mode in sweep.modes:
            print()
            print(variance_table(sweep, mode, NULL_TABLE))


def _parser_snp_arrays(sub):
    """The `snp-arrays` sub-command: its parser and options (handled by cmd_snp_arrays)."""
    from .io.features import FORMAT_HELP
    p = sub.add_parser("snp-arrays", help="the SNP analysis of activations saved by any framework",
                       description="Read-outs, node fields, clusters, noise, SNR (and with --head-dim the head "
                       "analysis) of every site in a features file. " + FORMAT_HELP)
    p.add_argument("features", help="FEATURES.npz (layout above)")
    p.add_argument("--layout", default=None, choices=["NTD", "NCT", "NCHW", "NHWC"],
                   help="layout of the arrays the file does not record one for: NTD = [N, tokens, nodes], NCT = "
                        "[N, channels, positions] (e.g. out.flatten(2)); 4-D maps are NCHW unless NHWC is given")
    p.add_argument("--modes", type=_modes, default="flat,mean,seqpool",
                   help="read-out modes, comma separated: flat,mean,seqpool")
    p.add_argument("--epochs", type=positive_int, default=10, help="read-out training epochs (default 10)")
    p.add_argument("--threshold", type=fraction, default=0.3, help="threshold on V/max (default 0.3, authors')")
    p.add_argument("--n-train", type=positive_int, default=None, help="training rows for the read-outs (default all)")
    p.add_argument("--head-dim", type=positive_int, default=None,
                   help="nodes per attention head: also report head specialisation (and, with a null, its verdicts) "
                        "for the attention-head sites (--head-sites; default: the sites named *.mha_heads)")
    p.add_argument("--head-sites", default=None, metavar="SITES",
                   help="comma-separated sites that are attention heads (D = heads x --head-dim); only these get "
                        "head verdicts")
    p.add_argument("--draws", type=positive_int, default=200, help="random node partitions for the head nulls")
    p.add_argument("--seed", type=nonneg_int, default=0, help="(first) read-out seed")
    _add_null_args(p)
    p.add_argument("--out", default=None, help="folder for snp_arrays_results.json (written first) and the figures "
                   "(default: print only)")
    p.set_defaults(func=cmd_snp_arrays)


def cmd_snp_arrays(args):
    from .io.features import analyse_features, format_table, head_analysis, read_features

    out = _check_output_dir(args.out, "--out") if args.out else None    # before the analysis, not after it
    fs = read_features(args.features, layout=args.layout)
    print(f"{args.features}: {len(fs.sites)} sites, {len(fs.y_train)} train / {len(fs.y_test)} test rows, "
          f"{fs.num_classes} classes; " + ", ".join(
              f"{s} [T={t}, D={d}" + (f", from {fs.layouts[s]}]" if fs.layouts.get(s) not in ("NTD", "ND") else "]")
              for s, (t, d) in fs.shapes.items()),
          flush=True)
    head_sites = _head_sites(args, fs)
    modes = tuple(args.modes.split(","))
    seeds = list(range(args.seed, args.seed + args.seeds))
    t0 = time.time()
    sweep = None
    if args.seeds == 1 and args.null_draws == 0:
        rep = analyse_features(fs, modes=modes, epochs=args.epochs, threshold=args.threshold, seed=args.seed,
                               n_train=args.n_train)
    else:
        from .analysis.nulls import features_with_null
        rep, sweep = features_with_null(fs, modes=modes, epochs=args.epochs, threshold=args.threshold, seeds=seeds,
                                        null_draws=args.null_draws, n_train=args.n_train, keep_all=head_sites)
    print()
    print(format_table(rep))
    if sweep is not None:
        _print_sweep(sweep, seeds)
    heads = None
    if head_sites:
        sub = type(rep)([r for r in rep.results if r.name in head_sites], rep.class_names)
        for r in head_analysis(sub, args.head_dim, seed=args.seed):
            m, sd = r["control"]
            print(f"heads {r['name']:<16} {r['mode']:>7}: {r['heads']} heads of {args.head_dim}, specialisation "
                  f"index {r['si']:.3f} (shuffled nodes {m:.3f} +- {sd:.3f}), labels per head "
                  f"{r['labels_per_head'].tolist()}, mean Jaccard {r['mean_jaccard']:.2f}")
        if sweep is not None:
            from .analysis.replicate import head_verdicts
            heads = head_verdicts(sweep, head_sites, args.head_dim, threshold=args.threshold, n_draws=args.draws,
                                  seed=args.seed)
            print(heads["text"])
    print(f"({time.time() - t0:.1f} s)")
    if out is not None:                                    # the numbers first, then the figures
        from .io.atomic import atomic_write_text
        from .analysis.replicate import _jsonable
        results = out / "snp_arrays_results.json"
        record = {"command": " ".join(sys.argv), "features": str(args.features), "table_seed": seeds[0],
                  "table": {k: v.tolist() for k, v in rep.table().items()}, "seconds": time.time() - t0}
        if sweep is not None:
            record["sweep"] = sweep.to_dict()
        if heads is not None:
            record["heads"] = {k: v for k, v in heads.items() if k != "text"}
        atomic_write_text(results, json.dumps(_jsonable(record), indent=1) + "\n")
        print(f"results: {results}")
        from . import plots
        for f in plots.snp_figures(rep, out, sweep=sweep):
            print(f"figure: {f}")
    return 0


def _head_sites(args, fs):
    """--head-sites (or, with --head-dim alone, every site named *.mha_heads): the sites that are attention heads;
    checked before any work."""
    if args.head_sites is None:
        if not args.head_dim:
            return []
        sites = [s for s in fs.sites if s.endswith(".mha_heads")]
        if not sites:
            raise ValueError(f"--head-dim {args.head_dim}: no site is named *.mha_heads; name the attention-head "
                             f"sites with --head-sites (of {', '.join(fs.sites)})")
        return sites
    if not args.head_dim:
        raise ValueError("--head-sites needs --head-dim (nodes per head)")
    sites = [s.strip() for s in args.head_sites.split(",") if s.strip()]
    bad = [s for s in sites if s not in fs.sites]
    if bad:
        raise ValueError(f"--head-sites: {', '.join(bad)} not in the file (sites: {', '.join(fs.sites)})")
    odd = [s for s in sites if fs.shapes[s][1] % args.head_dim]
    if odd:
        raise ValueError(f"--head-sites: D of {', '.join(odd)} is not a multiple of --head-dim {args.head_dim}")
    return sites


_TORCH_SNIPPET = """\
import torch
from src.cct import CCT                  # SHI-Labs/Compact-Transformers
model = CCT({kwargs})
{tokenizer}model.load_state_dict(torch.load("{out}", weights_only=True)); model.eval()
{preprocess}
{classes}
# logits = model(preprocess(pil_image).unsqueeze(0)); print(classes[logits.argmax(1).item()])"""


def torch_snippet(cfg, out, pre=None) -> str:
    """The PyTorch lines that build the official CCT class for `cfg`, load the exported state_dict, and
    prepare images as in training (`pre`: the preprocessing record, preprocess.from_meta; None: not recorded)."""
    from .preprocess import normalize_line
    names = (pre or {}).get("class_names")
    if names and len(names) == cfg.num_classes:
        classes = f"classes = {[str(c) for c in names]!r}"
        if len(classes) > 400:
            classes = (f"import json; classes = json.load(open({str(Path(out).with_suffix('.json'))!r}))"
                       f"['label_names']   # {len(names)} names")
    else:
        classes = f"classes = [str(i) for i in range({cfg.num_classes})]   # class names not recorded"
    kw = dict(img_size=cfg.img_size, embedding_dim=cfg.embedding_dim, n_input_channels=cfg.n_input_channels,
              n_conv_layers=cfg.n_conv_layers, kernel_size=cfg.kernel_size, stride=cfg.conv_stride,
              padding=cfg.conv_padding, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
              mlp_ratio=cfg.mlp_ratio, num_classes=cfg.num_classes, positional_embedding=cfg.positional_embedding)
    tok = ""
    if cfg.n_conv_layers > 1 and cfg.in_planes != 64:   # the CCT class leaves the Tokenizer's in_planes at 64
        tok = (f"from src.utils.tokenizer import Tokenizer   # in_planes={cfg.in_planes} is not a CCT argument\n"
               f"model.tokenizer = Tokenizer(kernel_size={cfg.kernel_size}, stride={cfg.conv_stride}, "
               f"padding={cfg.conv_padding}, n_conv_layers={cfg.n_conv_layers}, "
               f"n_input_channels={cfg.n_input_channels}, n_output_channels={cfg.embedding_dim}, "
               f"in_planes={cfg.in_planes}, max_pool=True, activation=torch.nn.ReLU, conv_bias=False)\n")
    return _TORCH_SNIPPET.format(kwargs=", ".join(f"{k}={v!r}" for k, v in kw.items()), tokenizer=tok, out=out,
                                 preprocess=normalize_line(pre), classes=classes)


def _parser_export(sub):
    """The `export` sub-command: its parser and options (handled by cmd_export)."""
    p = sub.add_parser("export", help="write a checkpoint as a PyTorch state_dict (or as a minicct .npz)",
                       description="Convert any checkpoint minicct reads (.npz, .pth, training checkpoint) to a "
                       ".pth that torch.load(weights_only=True) and the official CCT class load (--out X.pth), "
                       "or to a minicct .npz (--out X.npz). Prints the PyTorch lines that load it.")
    _add_checkpoint_args(p)
    p.add_argument("--out", required=True, help="destination: .pth (PyTorch; its preprocessing goes to the "
                   ".json beside it) or .npz (minicct)")
    p.add_argument("--dataset", default=None, type=_dataset_name, metavar="NAME",
                   help="record this dataset's mean, std and class names (for a checkpoint that records none: "
                        "give the data it was trained on)")
    p.add_argument("--no-download", action="store_true", help="with --dataset: never download")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file (default: refuse)")
    p.set_defaults(func=cmd_export)


def cmd_export(args):
    from .io.torch_io import from_params, save_state_dict
    from .io.npz_checkpoint import save_checkpoint
    from .preprocess import from_meta, normalize_line, record, write_pretrained_cfg

    out = _check_output_file(args.out, "--out")           # before any work
    if out.exists() and not args.overwrite:
        same = Path(args.checkpoint).exists() and out.resolve() == Path(args.checkpoint).resolve()
        raise ValueError(f"--out {out} already holds a file{' (the input checkpoint itself)' if same else ''}; "
                         f"refusing to replace it. Choose another --out, or pass --overwrite to replace it")
    params, cfg, meta = _load_any(args.checkpoint, args, model=args.model)
    pre = from_meta(meta, cfg)
    if args.dataset:                                   # statistics for a checkpoint that records none
        from .datasets import load
        data = load(args.dataset, download=not args.no_download,
                    **({"img_size": cfg.img_size} if args.dataset.startswith("folder:") else {}))
        _check_data_fits(data, cfg, args.checkpoint)
        if pre:
            print(f"note: the checkpoint records its preprocessing ({pre.get('source')}); --dataset "
                  f"{args.dataset} replaces it")
        pre = record(data, source=f"--dataset {args.dataset}")
    if out.suffix == ".npz":
        keep = {k: meta[k] for k in ("arch", "epoch", "metric", "test_acc", "dataset") if k in meta}
        if pre:
            keep["preprocess"] = pre
        save_checkpoint(out, params, cfg, dict(keep, exported_from=str(args.checkpoint)))
        print(f"wrote {out}: minicct checkpoint ({len(params)} tensors)" +
              ("" if pre else "; no mean/std recorded (give --dataset NAME to record its statistics)"))
        return 0
    save_state_dict(from_params(params), out)
    side = write_pretrained_cfg(out.with_suffix(".json"), cfg, pre, weights=out.name,
                                arch=meta.get("model") or meta.get("arch"))
    print(f"wrote {out}: PyTorch state_dict, {len(params)} float32 tensors under the official CCT names")
    print(f"wrote {side}: preprocessing (timm pretrained_cfg keys: input_size, mean, std, interpolation, "
          f"num_classes, label_names)" + ("" if pre else "; mean/std NOT recorded in the checkpoint: give "
                                          "--dataset NAME (the training data) to record them"))
    print("load it in PyTorch (torch.load(..., weights_only=True) needs no other code):")
    print(torch_snippet(cfg, out, pre))
    return 0


def _row_verdict(text):
    from .analysis.replicate import row_verdict
    return row_verdict(text)


def _verdict_list(rows, width=100):
    """claim -> verdict: each claim once (shortened), then one short line per measured quantity (the terminal's
    view of claims.md, which holds the numbers)."""
    lines, last = [], None
    for i, r in enumerate(rows, 1):
        claim = " ".join(str(r["claim"]).split())
        if claim != last:
            head = f'  "{claim}"'
            lines.append((head if len(head) <= width else head[:width - 2] + '…"') + f" ({r.get('source', '')})")
            last = claim
        v = str(r["verdict"])
        if len(v) > 40:                                  # several spans or SNR variants: the row's verdict
            v = f"{_row_verdict(v)} (per part in claims.md)"
        what = " ".join(str(r.get("quantity", "")).split())
        room = max(30, width - len(v) - 12)
        what = what if len(what) <= room else what[:room - 1] + "…"
        lines.append(f"    {i:2d}. {what} -> {v}")
    return "\n".join(lines)


def _parser_replicate(sub):
    """The `replicate` sub-command: its parser and options (handled by cmd_replicate)."""
    p = sub.add_parser("replicate", help="the claims table: each claim of the paper, measured over read-out seeds",
                       description="For each checkpoint: the paper's claims, each measured over --seeds read-out "
                       "seeds with its 95 %% interval, against its null or baseline, with a verdict (supported / "
                       "contradicted / inconclusive). Writes claims.json, claims.md and claims.png.")
    p.add_argument("--checkpoint", nargs="+", default=["data/checkpoints/cifar10_classroom.npz",
                   "data/checkpoints/cifar10_classroom_4heads.npz"],
                   help="one or more checkpoints: minicct .npz, PyTorch .pth state_dicts or timm/SHI-Labs training "
                        "checkpoints (default: the two committed classroom CCTs trained on real CIFAR-10; "
                        "data/checkpoints/classroom*.npz are the embedded-data ones)")
    _add_checkpoint_args(p, what="--init")              # --heads, --ema (for .pth files)
    p.add_argument("--model", default=None, help="variant name to build for a .pth (classes come from the file)")
    p.add_argument("--pretrained", default=None, help="analyse official CCT weights instead")
    p.add_argument("--allow-http", action="store_true", help="with --pretrained: also try the plain-HTTP mirror")
    _add_data_args(p, default="auto")
    p.add_argument("--seeds", type=positive_int, default=3,
                   help="number of read-out seeds (default 3; >= 2 for verdicts)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="first read-out seed (default 0)")
    p.add_argument("--modes", type=_modes, default="flat,mean,seqpool",
                   help="read-out modes, comma separated; flat is required")
    p.add_argument("--epochs", type=positive_int, default=10, help="read-out training epochs (default 10)")
    p.add_argument("--retrain-epochs", type=positive_int, default=1,
                   help="masked retraining epochs for ANDC and baselines")
    p.add_argument("--threshold", type=fraction, default=0.3, help="threshold on V/max (default 0.3, authors')")
    p.add_argument("--n-train", type=positive_int, default=None, help="training images for the read-outs (default all)")
    p.add_argument("--draws", type=positive_int, default=200, help="random node partitions for the head nulls")
    p.add_argument("--n-perm", type=positive_int, default=2000, help="random label sets per head ablation")
    p.add_argument("--null-draws", type=nonneg_int, default=_null_draws_default(),
                   help="label-permutation draws per read-out seed: every claim is also decided on read-outs trained "
                        "with shuffled labels (0 = no null; default %(default)s, docs/nulls.md)")
    p.add_argument("--out", default="runs/replicate", help="output folder (one subfolder per checkpoint)")
    p.set_defaults(func=cmd_replicate)


def cmd_replicate(args):
    from .analysis.replicate import format_positions_table, replicate, write_outputs
    from .datasets import load

    seeds = list(range(args.seed, args.seed + args.seeds))
    if args.seeds < 3:
        print(f"warning: --seeds {args.seeds}: with fewer than 3 read-out seeds the 95 % intervals are very wide "
              f"(t quantile {'12.7' if args.seeds == 2 else 'undefined'}) and verdicts mostly inconclusive; use "
              f"--seeds 3 or more", file=sys.stderr, flush=True)
    outs = replicate_out_dirs(args.out, [args.pretrained] if args.pretrained else args.checkpoint)
    for o in outs:                                      # before the analysis, not after it
        _check_output_dir(o, "--out")
    models = []
    if args.pretrained:
        from .io.pretrained import load_pretrained
        params, cfg, meta = load_pretrained(args.pretrained, download=not args.no_download,
                                            allow_http=args.allow_http)
        models.append((args.pretrained, params, cfg, meta))
    else:
        for path in args.checkpoint:                   # .npz, .pth or training checkpoint alike
            params, cfg, meta = _load_any(path, args, model=args.model)
            models.append((path, params, cfg, meta))
    t_all = time.time()
    for (name, params, cfg, meta), out in zip(models, outs):
        t0 = time.time()
        dataset = _dataset_for(args, None if args.pretrained else name)
        data = load(dataset, download=not args.no_download, **_dataset_kwargs(args, cfg.img_size, dataset))
        _check_data_fits(data, cfg, name)
        _use_model_stats(data, cfg, meta)
        title = (f"{Path(name).name}: {cfg.num_layers} encoders x {cfg.num_heads} heads, {data.name}, "
                 f"read-out seeds {seeds[0]}..{seeds[-1]}")
        print(f"\n== {title}", flush=True)
        res = replicate(params, cfg, data, seeds=seeds, modes=tuple(args.modes.split(",")), epochs=args.epochs,
                        retrain_epochs=args.retrain_epochs,
                        threshold=args.threshold, n_train=args.n_train, n_draws=args.draws, n_perm=args.n_perm,
                        null_draws=args.null_draws)
        print(f"\nPer-encoder quantities, mean [95 % interval over {len(seeds)} read-out seeds]:")
        for mode in res["positions"]:
            print(format_positions_table(res["positions"], mode))
        print("\nClaims -> verdicts (the full table, with measured values and nulls, is in claims.md):")
        print(_verdict_list(res["rows"]))
        counts = {}
        for r in res["rows"]:
            v = _row_verdict(r["verdict"])
            counts[v] = counts.get(v, 0) + 1
        order = [v for v in ("supported", "contradicted", "inconclusive", "mixed") if v in counts] + \
            [v for v in counts if v not in ("supported", "contradicted", "inconclusive", "mixed")]
        print(f"\n{len(res['rows'])} rows: " + ", ".join(f"{counts[v]} {v}" for v in order)
              + (" (mixed: a row whose spans got different verdicts)" if "mixed" in counts else "")
              + f"  ({time.time() - t0:.0f} s)", flush=True)
        checks = " ".join(r.get("null_check", "") for r in res["rows"])
        if res.get("config", {}).get("null_draws"):
            print(f"against the label-permutation null ({res['config']['null_draws']} draw(s) per seed): "
                  f"'not label-driven' {checks.count('not label-driven')} times, 'label-driven' "
                  f"{checks.count('label-driven') - checks.count('not label-driven')} times (column 5)")
        paths = write_outputs(res, out, title)           # after the tables: a failing write cannot hide them
        print(f"written: {paths['json']}, {paths['md']}, {paths['png']}")
    print(f"replicate done in {time.time() - t_all:.0f} s")
    return 0


def _shipped_exists(path):
    from .resources import resolve_shipped
    return resolve_shipped(path).exists()


def _cache_entries(folder):
    """The cache entries of `folder` (data_dir()): everything but the committed README.md, checkpoints/, cifar10_sample/, samples/
    and hidden files, with their sizes in bytes."""
    keep = {"README.md", "checkpoints", "samples", "cifar10_sample"}
    out = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.name in keep or p.name.startswith("."):
            continue
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        out.append((p, size))
    return out


def _parser_cache(sub):
    """The `cache` sub-command: its parser and options (handled by cmd_cache)."""
    p = sub.add_parser("cache", help="where the download and image caches are, their sizes; --clear deletes them",
                       description="Caches (downloaded datasets, decoded image folders, official weights, the "
                       "embedded dataset) live in $MINICCT_DATA, else data/ of a source checkout, else "
                       "~/.cache/minicct. Lists them; --clear deletes them (committed checkpoints are kept).")
    p.add_argument("--clear", action="store_true", help="delete every cache entry listed")
    p.set_defaults(func=cmd_cache)


def cmd_cache(args):
    import shutil
    from .datasets import data_dir
    folder = data_dir()
    why = ("$MINICCT_DATA" if os.environ.get("MINICCT_DATA") else
           "data/ of this checkout" if (folder.parent / "setup.cfg").is_file() else "the user cache folder")
    entries = _cache_entries(folder)
    print(f"cache folder: {folder} ({why}; set MINICCT_DATA to move it)")
    for p, size in entries:
        print(f"  {size / 1e6:9.1f} MB  {p.name}{'/' if p.is_dir() else ''}")
    print(f"  {sum(s for _, s in entries) / 1e6:9.1f} MB  in {len(entries)} entries")
    if args.clear:
        for p, _ in entries:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            print(f"deleted {p}")
        print("the committed checkpoints and README (if any) are kept; downloads are fetched again when needed")
    elif entries:
        print("clear them with: python -m minicct cache --clear")
    return 0


def replicate_out_dirs(out, names) -> list:
    """replicate's output folder per checkpoint: `out` for one, else out/<file stem>; checkpoints whose stems
    coincide (runs/a/model.npz, runs/b/model.npz) get their parent folder's name too (a_model, b_model), then a
    number, so that no run overwrites another's files."""
    out = Path(out)
    if len(names) <= 1:
        return [out]
    stems = [Path(n).stem for n in names]
    picked = []
    for n, st in zip(names, stems):
        name = st if stems.count(st) == 1 else f"{Path(n).resolve().parent.name}_{st}"
        base, i = name, 2
        while name in picked:
            name, i = f"{base}-{i}", i + 1
        picked.append(name)
    return [out / p for p in picked]


def _parser_info(sub):
    """The `info` sub-command: its parser and options (handled by cmd_info)."""
    p = sub.add_parser("info", help="list the model variants and their parameter counts")
    p.set_defaults(func=cmd_info)


def cmd_info(args):
    from . import __version__
    from . import model as M
    print(f"minicct {__version__}")
    for name in M.VARIANTS:
        cfg = M.get_config(name)
        print(f"  {name:<16} {M.count_params(cfg):>11,} params  {cfg.seq_len:4d} tokens  L={cfg.num_layers} "
              f"h={cfg.num_heads} D={cfg.embedding_dim} K={cfg.num_classes}")
    from .datasets import data_dir
    from .resources import checkout_root, shipped_checkpoints
    root = checkout_root()
    print(f"running from: {root if root else Path(__file__).resolve().parent} "
          f"({'source checkout' if root else 'installed package'})")
    for c in shipped_checkpoints():
        print(f"  shipped checkpoint: {c}")
    print(f"caches: {data_dir()} (python -m minicct cache lists and clears them)")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minicct", description="minicct: a NumPy Compact Convolutional "
                                 "Transformer and the single-nodal-performance analysis.")
    ap.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = ap.add_subparsers(dest="cmd", required=True)

    _parser_train(sub)
    _parser_evaluate(sub)
    _parser_snp(sub)
    _parser_snp_arrays(sub)
    _parser_export(sub)
    _parser_replicate(sub)
    _parser_info(sub)
    _parser_cache(sub)

    for sp in sub.choices.values():  # --debug also after the subcommand; SUPPRESS keeps a top-level one
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every failure: one clear last line and a non-zero exit code
        if args.debug:
            traceback.print_exc()
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 1


def error_message(e: BaseException) -> str:
    """The text a user sees for an exception: our own errors carry their message; an unexpected type is named,
    with the hint to rerun with --debug."""
    if isinstance(e, MemoryError):
        return ("out of memory; use a smaller --batch-size, --memory-gb, --n-train or model "
                "(rerun with --debug for the traceback)")
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.strerror}: {e.filename}"
    if isinstance(e, (ValueError, OSError, RuntimeError)) and str(e):
        return str(e)
    return f"{type(e).__name__}: {e} (unexpected; rerun with --debug for the traceback and report it)"


if __name__ == "__main__":
    sys.exit(main())
