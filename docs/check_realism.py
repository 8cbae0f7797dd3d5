"""Does a checkpoint behave like real images under the analysis? Reads claims.json files of `replicate`.

    python docs/check_realism.py docs/results/real/*/claims.json docs/results/embedded/*/claims.json

The three trends that CCTs trained on real CIFAR-10 show consistently, from the tokenizer to the last encoder:
  noise per node falls in every read-out mode, in every seed;
  the mean cluster size of the flat read-out falls, in every seed;
  read-out accuracy (mean over seeds) rises in at least 2 of the 3 read-out modes.
Prints one line per file and a summary; exit code 1 if any file misses a trend.
"""
import json
import sys
from pathlib import Path


def check(path):
    positions = json.loads(Path(path).read_text())["positions"]      # [mode][quantity] -> per position
    notes, ok = [], True
    for mode in ("flat", "mean", "seqpool"):
        if mode in positions:
            first, last = (positions[mode]["noise"][i]["values"] for i in (0, -1))
            falls = all(b < a for a, b in zip(first, last))
            ok &= falls
            notes.append(f"noise {mode} {sum(first) / len(first):.1f} -> {sum(last) / len(last):.1f}"
                         + ("" if falls else " (does not fall)"))
    first, last = (positions["flat"]["cluster_size"][i]["values"] for i in (0, -1))
    shrinks = all(b < a for a, b in zip(first, last))
    ok &= shrinks
    notes.append(f"cluster size {sum(first) / len(first):.2f} -> {sum(last) / len(last):.2f}"
                 + ("" if shrinks else " (does not fall)"))
    rising = [m for m in positions if positions[m]["accuracy"][-1]["mean"] > positions[m]["accuracy"][0]["mean"]]
    ok &= len(rising) >= 2
    notes.append(f"accuracy rises in {len(rising)} of {len(positions)} modes ({', '.join(rising)})")
    return ok, "; ".join(notes)


def main(paths):
    results = [(p, *check(p)) for p in paths]
    for p, ok, text in results:
        print(f"{'real-like' if ok else 'differs  '}  {Path(p).parent.name}: {text}")
    n_ok = sum(ok for _, ok, _ in results)
    print(f"{n_ok} of {len(results)} checkpoints show the real-image trends")
    return 0 if results and n_ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
