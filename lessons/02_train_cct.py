"""Lesson 02: train the classroom CCT on the embedded dataset, on a CPU, in about five minutes.

What happens (minicct/train/loop.py):
  * the embedded dataset is generated once from its seed (20 classes = 5 shapes x 2 colour families x 2
    layouts; the layout is a long-range relation between two objects) and cached under data/;
  * the classroom model (minicct.model.CLASSROOM: 2 conv stages -> 64 tokens, sine positional embedding,
    4 encoders x 2 heads, D = 64) is trained with SGD (Nesterov momentum 0.9), warm-up + cosine, label
    smoothing 0.1, random crop + flip; every step is one call of train_step (minicct/train/step.py):
    logits = forward(x) -> loss = CE(logits, y) -> grads = backward -> optimizer update;
  * every epoch: train loss/accuracy, test loss/accuracy, speed; a checkpoint (.npz) is written atomically,
    so Ctrl-C loses nothing (resume with --resume);
  * at the end: the loss/accuracy plot (PNG) and the checkpoint path.

The committed checkpoint data/checkpoints/classroom.npz was made by exactly this script with its defaults,
and data/checkpoints/classroom_4heads.npz with --heads 4 (4 heads of 16 dims each, like CCT-7's 4 heads; same
D = 64, so the same cost); see data/checkpoints/README.md.
Run:  python lessons/02_train_cct.py  [--epochs N] [--heads 2|4] [--out PATH]
"""
import argparse
import os
import sys
import time
from pathlib import Path

# One BLAS thread: the work is mostly element-wise, and a second OpenBLAS thread competing with other processes
# for 2 cores made steps several times slower here. Set OPENBLAS_NUM_THREADS yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from minicct import model as M  # noqa: E402
from minicct.datasets import load  # noqa: E402
from minicct.plots import plot_history  # noqa: E402
from minicct.io.npz_checkpoint import save_checkpoint  # noqa: E402
from minicct.parallel import default_workers  # noqa: E402
from minicct.train.loop import HEADER, TrainConfig, train  # noqa: E402

# The classroom recipe: SGD with Nesterov momentum 0.9, warm-up then cosine, label smoothing 0.1, crop + flip.
# (The reference CCT uses AdamW for 300 epochs; in a few-minute run AdamW left this model at the colour-only
# solution of the embedded dataset for epochs, while SGD learns shapes and layouts: try --optimizer adamw.)
DEFAULTS = dict(epochs=8, optimizer="sgd", lr=0.05, weight_decay=5e-4, batch_size=128, warmup=0.5, seed=0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    ap.add_argument("--optimizer", default=DEFAULTS["optimizer"], choices=["sgd", "adamw"])
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--heads", type=int, default=2,
                    help="attention heads per encoder (default 2; 4 = the paper's CCT-7 head count); "
                         "must divide D = 64")
    ap.add_argument("--out", default="runs/classroom.npz", help="checkpoint path (default runs/classroom.npz)")
    ap.add_argument("--resume", default=None, help="continue an interrupted run from its checkpoint")
    ap.add_argument("--workers", type=int, default=None,
                    help="batch-parallel workers (default: every usable CPU). Several workers sum the batch's "
                         "gradient in another order, equal to one worker's only up to float32 rounding, and 8 "
                         "epochs amplify that: the committed checkpoints were trained with --workers 1")
    args = ap.parse_args(argv)
    if args.workers is not None:
        if args.workers < 1:
            ap.error(f"--workers must be >= 1, got {args.workers}")
        os.environ["MINICCT_WORKERS"] = str(args.workers)      # read by minicct.parallel.default_workers

    data = load("embedded")
    if args.heads < 1 or 64 % args.heads:
        ap.error(f"--heads must divide the embedding dimension 64, got {args.heads}")
    cfg = M.get_config("classroom", num_classes=data.num_classes, num_heads=args.heads)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                     weight_decay=DEFAULTS["weight_decay"], warmup_epochs=DEFAULTS["warmup"], seed=args.seed)
    print(f"embedded dataset: {len(data.y_train)} train / {len(data.y_test)} test images, {data.num_classes} "
          f"classes; groups {', '.join(data.groups)}")
    print(f"classroom CCT: {M.count_params(cfg):,} parameters, {cfg.seq_len} tokens, {cfg.num_layers} encoders x "
          f"{cfg.num_heads} heads (d={cfg.head_dim}), D={cfg.embedding_dim}, F={cfg.ff_dim}")
    print(f"training {tc.epochs} epochs, {tc.optimizer} lr {tc.lr:g}, batch {tc.batch_size}, seed {tc.seed}\n")
    print(HEADER)
    t0 = time.time()
    try:
        params, hist, meta = train(cfg, data, tc, checkpoint=args.out, resume=args.resume)
    except KeyboardInterrupt:
        return 130
    seconds = time.time() - t0
    meta.update(model="classroom", seconds=round(seconds, 1), workers=default_workers(),
                data_seed=data.meta["seed"], data_difficulty=data.meta["difficulty"],
                command="python lessons/02_train_cct.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    save_checkpoint(args.out, params, cfg, meta)
    plot = plot_history(hist, Path(args.out).with_suffix(".png"), "classroom CCT on the embedded dataset")
    print(f"\ntest accuracy {100 * meta['test_acc']:.2f}% after {tc.epochs} epochs in {seconds / 60:.1f} min")
    print(f"checkpoint: {args.out}\nplot: {plot}")
    chance = 100 / data.num_classes
    ok = meta["test_acc"] * 100 > 3 * chance
    print(f"check: test accuracy {'well above' if ok else 'NOT above'} chance ({chance:.0f}%): "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
