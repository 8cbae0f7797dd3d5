"""Lesson 08: which of the paper's claims hold on our models? The replication report.

Koresh et al. (2025) make a handful of claims in their abstract (and build on those of Tzach et al. 2023 and
Gross et al. 2025). For each, this lesson measures the quantity on the material's two classroom checkpoints
(2 heads and 4 heads), over several read-out seeds, and sets it against its null or baseline:

  claim                                        measured                       null / baseline
  nodes identify small clusters                labels in clusters per node    K/4 (few) .. K/2 (many)
  a node selects one output label              top-label fraction per node    50 %
  accuracy progresses with the layers          read-out accuracy per encoder  paired differences over seeds
  features sharpen, SNR rises                  SNR and noise per encoder      paired differences over seeds
  ANDC prunes without affecting accuracy       ANDC - unpruned accuracy       1-point tolerance
    ... and selectively                        ANDC - random / magnitude      same per-node degree, same training
  heads break symmetry (specialise)            specialisation index           random partitions of the nodes
  each head is an expert on its labels         accuracy drop when zeroed      random label sets, Holm, MDE
  each label is recognised by a few heads      heads per label (SHP)          random partitions of the nodes
  (ours) clusters follow ground-truth groups   clusters inside one group      label permutation, Holm
Every verdict is one of supported / contradicted / inconclusive, by the rule written next to it in claims.md.
A verdict is a statement about these small models and this material, not about the paper's CCT-7 on CIFAR-100.

The lesson prints one line per claim (claim -> verdict) and writes, per checkpoint, claims.md (the full table:
quantity, mean [95 % interval], null, verdict, rule), claims.json (everything, with the per-encoder values) and
claims.png. It calls minicct.analysis.replicate, as `python -m minicct replicate` does; the numbers quoted in
the README come from `python -m minicct replicate --seeds 5` (same code, more seeds).

Run:  python lessons/08_replication.py  [--material real|embedded] [--seeds 3] [--epochs 5] [--checkpoint PATH]
      [--out runs/08_replication]
"""
import _common  # noqa: F401  (first: one BLAS thread, minicct importable from a checkout)

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from _common import MATERIALS, Clock, add_material_args, load_material
from minicct.analysis.replicate import replicate, row_verdict, write_outputs

# what each claims-table row is called in the verdict list: (claim id, text in its quantity, name)
CLAIM_NAMES = (("small_clusters", "", "nodes see small clusters"),
               ("single_label", "", "a node selects one label"),
               ("accuracy_rises", "", "accuracy progresses with the layers"),
               ("sharpened", "SNR variants", "SNR variants (a)-(d) rise"),
               ("sharpened", "SNR", "SNR rises along the encoders"),
               ("sharpened", "noise", "noise falls along the encoders"),
               ("andc", "FF linear2", "ANDC, FF linear2 of all encoders"),
               ("andc", "minus unpruned accuracy", "ANDC, last read-out: no accuracy loss"),
               ("andc", "selective", "ANDC, last read-out: selective"),
               ("heads_break_symmetry", "", "heads specialise (SI vs random heads)"),
               ("few_heads", "", "few heads per label (SHP vs random heads)"),
               ("heads_expert", "", "a head is an expert on its labels (ablation)"),
               ("groups", "", "(ours) clusters follow ground-truth groups"))


@dataclass
class Claims:
    """The claims table of one checkpoint and where it was written."""
    checkpoint: str
    rows: list              # replicate's rows: id, source, claim, quantity, measured, null_or_baseline, verdict, rule
    files: dict             # json, md, png -> path
    seconds: float


def claim_name(row) -> str:
    name = next((n for key, text, n in CLAIM_NAMES if row["id"] == key and text in row["quantity"]), row["quantity"])
    mode = re.search(r"\((flat|mean|seqpool) read-out\)", row["quantity"])
    return f"{name}, {mode.group(1)} read-out" if mode and row["id"] in ("accuracy_rises", "sharpened") else name


def short_verdict(verdict: str, L: int) -> str:
    """'tokenizer -> enc L: a; enc 1 -> enc L: b' -> 'A / B' (the header says which is which)."""
    verdict = re.sub(rf"tokenizer -> enc {L}: (\w+); enc 1 -> enc {L}: (\w+)", r"\1 / \2", verdict)
    return re.sub(r" \(from enc 1: (\w+)\)", r" / \1", verdict).upper()


def verdict_counts(rows) -> str:
    """One verdict per row (a row whose spans disagree is 'mixed'), so the counts add up to the rows."""
    counts = Counter(row_verdict(r["verdict"]) for r in rows)
    return ", ".join(f"{counts[v]} {v}" for v in ("supported", "contradicted", "inconclusive", "mixed") if counts[v])


def print_claims(claims: Claims, L: int):
    print(f"\nclaims on {Path(claims.checkpoint).name} ('A / B': tokenizer -> encoder {L} / encoder 1 -> encoder {L}):")
    for row in claims.rows:
        print(f"  {claim_name(row) + ' (' + row['source'] + ')':<60} {short_verdict(row['verdict'], L)}")
    print(f"{len(claims.rows)} rows; verdicts: {verdict_counts(claims.rows)}  ({claims.seconds:.0f} s)")
    print(f"full table (measured values, nulls, rules): {claims.files['md']}\nfigure: {claims.files['png']}")


def material_checkpoints(args) -> list:
    """Heads of the models to analyse: the material's 2- and 4-head checkpoints (those present), or --checkpoint."""
    if args.checkpoint:
        return [None]
    return [h for h in (2, 4) if MATERIALS[args.material][h].exists()] or [2]


def main(argv=None):
    args = parse_args(argv)
    clock = Clock()
    heads = material_checkpoints(args)
    seeds = list(range(args.seeds))
    results = []
    for h in heads:
        m = load_material(args, heads=h)
        L, name = m.cfg.num_layers, m.checkpoint.name
        title = f"{name}: {L} encoders x {m.cfg.num_heads} heads, {m.data.name}, read-out seeds {seeds[0]}..{seeds[-1]}"
        print(f"{name}: capture, {len(seeds) * (L + 1) * len(args.modes.split(','))} read-outs along the encoders, "
              f"then per seed the heads' read-outs and ANDC, then the nulls and head ablations:")
        res = replicate(m.params, m.cfg, m.data, seeds=seeds, modes=tuple(args.modes.split(",")), epochs=args.epochs,
                        retrain_epochs=1, threshold=0.3, n_train=args.n_train, n_draws=args.draws,
                        n_perm=args.n_perm, progress=lambda text, **_: clock.step(progress_text(text)))
        out = Path(args.out) / m.checkpoint.stem if len(heads) > 1 else Path(args.out)
        claims = Claims(str(m.checkpoint), res["rows"], write_outputs(res, out, title), res["seconds"])
        print_claims(claims, L)
        results.append(claims)
        print()
    print(f"look at: which claims are SUPPORTED on {' and '.join(Path(c.checkpoint).name for c in results)}, and the "
          f"rules in claims.md; done in {clock.total():.0f} s")
    return 0


def progress_text(text: str) -> str:
    """replicate's progress line without its own clock (the lesson's Clock prints the time)."""
    return re.sub(r"\s*\[\d+ s\]$", "", text.strip())


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_material_args(ap)
    ap.add_argument("--seeds", type=int, default=3, help="read-out seeds (>= 2 for a verdict)")
    ap.add_argument("--epochs", type=int, default=5, help="read-out epochs (the report's default is 10)")
    ap.add_argument("--modes", default="flat,mean,seqpool", help="read-outs (flat, the authors', is required)")
    ap.add_argument("--n-train", type=int, default=None, help="training images for the read-outs (all)")
    ap.add_argument("--draws", type=int, default=200, help="random node partitions for the head nulls")
    ap.add_argument("--n-perm", type=int, default=2000, help="random label sets per head ablation")
    ap.add_argument("--out", default="runs/08_replication", help="output folder (one subfolder per checkpoint)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
