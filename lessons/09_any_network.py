"""Lesson 9: the single-nodal-performance (SNP) analysis of any network, from activations saved to a file.

    python lessons/09_any_network.py [--backend auto|torch|minicct] [--n-train 2000] [--n-test 1000]
        [--epochs 5] [--modes flat,mean] [--out runs/09_any_network]

The analysis only needs arrays: per site, the activations A [N, T, D] of training and test images and their
labels (minicct/io/features.py documents the file). So it applies to networks minicct did not build
("call for their extension to other architectures", Koresh et al.):

  with PyTorch installed (backend torch): a tiny ViT written below (patch 4 -> 64 tokens, D = 64, 2 blocks of
      2 heads, mean-pooled head; no torchvision) is trained for --torch-epochs epochs on the embedded dataset;
      minicct.capture_torch.capture_features (forward hooks by module name) records, for every image, the
      patch embedding, each block's concatenated head outputs (before the output projection) and each block's
      output, and writes them to FEATURES.npz;
  without PyTorch (backend minicct): the committed classroom CCT's activations at the same kinds of sites
      (tokens, enc{e}.mha_heads, enc{e}.out), written through the very same file format.

Then, exactly as `python -m minicct snp-arrays FEATURES.npz --head-dim 32` does (the command is printed):
per-site read-outs, node fields, clusters, noise, SNR, and the head specialisation of the head sites against
its shuffled-node control. Read-outs see the first --n-train training images, unaugmented, for a few epochs
(the authors: 200 augmented epochs), so their accuracies are lower bounds [INF].
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minicct.datasets import load  # noqa: E402
from minicct.io.features import (analyse_features, format_table, head_analysis, read_features,  # noqa: E402
                                 write_features)

HEAD_DIM = 32


def torch_features(data, n_train, n_test, epochs, seed, out):
    """Train the tiny ViT below with PyTorch and write its hooked activations to `out`."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.h, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.heads_out = nn.Identity()          # hook point: concatenated per-head outputs [N, T, D]

        def forward(self, x):
            n, t, d = x.shape
            q, k, v = self.qkv(x).reshape(n, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
            a = ((q @ k.transpose(-2, -1)) * (d // self.h) ** -0.5).softmax(-1)
            return self.proj(self.heads_out((a @ v).transpose(1, 2).reshape(n, t, d)))

    class Block(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.n1, self.attn, self.n2 = nn.LayerNorm(dim), Attention(dim, heads), nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.n1(x))
            return x + self.mlp(self.n2(x))

    class TinyViT(nn.Module):
        def __init__(self, classes, dim=64, heads=2, depth=2, patch=4):
            super().__init__()
            self.embed = nn.Conv2d(3, dim, patch, patch)
            self.pos = nn.Parameter(torch.randn(1, (32 // patch) ** 2, dim) * 0.02)
            self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
            self.norm, self.fc = nn.LayerNorm(dim), nn.Linear(dim, classes)

        def forward(self, x):                        # [N, 3, 32, 32] -> [N, K]
            x = self.embed(x).flatten(2).transpose(1, 2) + self.pos    # [N, 64, D]
            for b in self.blocks:
                x = b(x)
            return self.fc(self.norm(x).mean(1))

    torch.manual_seed(seed)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    prep = lambda x: (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std   # noqa: E731
    x_tr, y_tr = prep(data.x_train), torch.from_numpy(data.y_train)
    net = TinyViT(data.num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    for e in range(epochs):
        net.train()
        for idx in torch.randperm(len(y_tr), generator=g).split(128):
            loss = F.cross_entropy(net(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  torch epoch {e + 1}/{epochs}: loss {loss.item():.3f}", flush=True)
    # minicct.capture_torch: forward hooks on the named modules, eval mode, no_grad, batches; the conv map of
    # `embed` [N, 64, 8, 8] is stored as [N, 64 positions, 64 channels]; the file records its layout.
    from minicct.capture_torch import capture_features
    sites = {"embed": "embed"}
    for i in range(len(net.blocks)):
        sites[f"block{i}.heads"], sites[f"block{i}.out"] = f"blocks.{i}.attn.heads_out", f"blocks.{i}"
    return capture_features(net, sites, out, train=(data.x_train[:n_train], data.y_train[:n_train]),
                            test=(data.x_test[:n_test], data.y_test[:n_test]), class_names=data.class_names,
                            batch_size=500, mean=data.mean, std=data.std)


def minicct_features(data, n_train, n_test, checkpoint, out):
    """The classroom CCT's activations (tokens, enc{e}.mha_heads, enc{e}.out), written to `out`."""
    from minicct.analysis.report import capture
    from minicct.io.checkpoints import load_any_checkpoint

    params, cfg, meta = load_any_checkpoint(checkpoint)
    print(f"  {meta['report']}")
    names = ["tokens"] + [f"enc{e}.{s}" for e in range(cfg.num_layers) for s in ("mha_heads", "out")]
    tr = capture(params, cfg, data.x_train[:n_train], data.mean, data.std, names)
    te = capture(params, cfg, data.x_test[:n_test], data.mean, data.std, names)
    return write_features(out, {n: (tr[n], te[n]) for n in names}, data.y_train[:n_train], data.y_test[:n_test],
                          data.class_names)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "minicct"],
                    help="auto: PyTorch's tiny ViT when torch is installed, else minicct's classroom CCT")
    ap.add_argument("--checkpoint", default=str(ROOT / "data" / "checkpoints" / "classroom.npz"),
                    help="the minicct model of the minicct backend (.npz, .pth or training checkpoint)")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=5, help="read-out epochs (default 5)")
    ap.add_argument("--torch-epochs", type=int, default=3, help="training epochs of the tiny ViT (default 3)")
    ap.add_argument("--modes", default="flat,mean")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/09_any_network")
    args = ap.parse_args(argv)
    t0 = time.time()
    data = load("embedded")
    out = Path(args.out) / "features.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    backend = args.backend
    if backend in ("auto", "torch"):
        try:
            import torch  # noqa: F401
            backend = "torch"
        except ImportError:
            if backend == "torch":
                print("PyTorch is not installed: --backend torch is not possible (pip install torch), or use "
                      "--backend minicct", file=sys.stderr)
                return 2
            print("PyTorch is not installed: analysing minicct's own classroom CCT instead, written through the "
                  "same file format (install torch to analyse a PyTorch model).")
            backend = "minicct"
    print(f"1. activations of the {'PyTorch tiny ViT' if backend == 'torch' else 'minicct classroom CCT'} "
          f"-> {out}", flush=True)
    if backend == "torch":
        torch_features(data, args.n_train, args.n_test, args.torch_epochs, args.seed, out)
    else:
        minicct_features(data, args.n_train, args.n_test, args.checkpoint, out)
    fs = read_features(out)
    print("   sites: " + ", ".join(f"{s} [T={t}, D={d}]" for s, (t, d) in fs.shapes.items()))
    print(f"2. the SNP analysis of the file (same as: python -m minicct snp-arrays {out} --modes {args.modes} "
          f"--epochs {args.epochs} --head-dim {HEAD_DIM})", flush=True)
    rep = analyse_features(fs, modes=tuple(args.modes.split(",")), epochs=args.epochs, seed=args.seed)
    print()
    print(format_table(rep))
    print(f"\n3. heads ({HEAD_DIM} nodes each) of the head sites, against the shuffled-node control:")
    for r in head_analysis(rep, HEAD_DIM, seed=args.seed):
        if "heads" not in r["name"]:
            continue
        m, sd = r["control"]
        print(f"   {r['name']:<16} {r['mode']:>5}: SI {r['si']:.3f} (shuffled {m:.3f} +- {sd:.3f}), labels per "
              f"head {r['labels_per_head'].tolist()}")
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
