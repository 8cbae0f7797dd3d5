"""Command line of the exercise checker.

    python -m minicct.exercises list
    python -m minicct.exercises check 02                     the shipped file lessons/exercises/ex02_*.py
    python -m minicct.exercises check 02 --file my_ex02.py   any file with the same functions
    python -m minicct.exercises check all [--dir folder]     every exNN_*.py file of a folder
    --seed S changes the random inputs (default 0).
Exit code: 0 when every case passes, 1 when something fails or is not yet implemented, 2 on a usage error.
"""
import argparse
import os
import sys


def main(argv=None):
    from . import check, check_all, get_exercise, list_text

    parser = argparse.ArgumentParser(prog="python -m minicct.exercises",
                                     description="Grade the minicct classroom exercises against minicct itself.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the exercises")
    p = sub.add_parser("check", help="grade one exercise (or all)")
    p.add_argument("exercise", help="exercise number (1..7, 01, ex01) or 'all'")
    p.add_argument("--file", help="the student's file (default: the one in lessons/exercises)")
    p.add_argument("--dir", help="with 'all': the folder holding the exNN_*.py files")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    args = parser.parse_args(argv)

    if args.command == "list":
        print(list_text())
        return 0
    try:
        if args.exercise.lower() == "all":
            if args.file:
                parser.error("--file names one exercise's file; with 'all' use --dir")
            ok, text = check_all(args.dir, seed=args.seed)
        else:
            if args.dir and args.file:
                parser.error("give --file or --dir, not both")
            e = get_exercise(args.exercise)
            file = args.file or (os.path.join(args.dir, e.filename) if args.dir else None)
            ok, text = check(e.id, file, seed=args.seed)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
