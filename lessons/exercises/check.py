"""Grade an exercise: python lessons/exercises/check.py 02 [--file my_ex02.py].

The same as `python -m minicct.exercises check 02`.
Also: python lessons/exercises/check.py all | list. Works from a checkout without installing minicct.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))    # the repository root, for `import minicct`

from minicct.exercises.__main__ import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(main(argv if argv[:1] in (["list"], ["check"]) else ["check"] + argv))
