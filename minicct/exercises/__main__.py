"""Command line of the exercise checker.

    python -m minicct.exercises list
    python -m minicct.exercises check 02                     the shipped file lessons/exercises/ex02_*.py
    python -m minicct.exercises check 02 --file my_ex02.py   any file with the same functions
    python -m minicct.exercises check all [--dir folder]     every exNN_*.py file of a folder
    python -m minicct.exercises class CLASS_FOLDER          every student folder CLASS_FOLDER/<student>/exNN_*.py:
                                                            one summary table (--json / --csv for the details)
    --seed S changes the random inputs (default 0); --time-limit T seconds per student call (default 20);
    --json FILE / --csv FILE write the results (cases passed per function); --extra DIR adds the instructor's
    own cases DIR/exNN_cases.py (a `grade(session)` function; also $MINICCT_EXTRA_CASES). A student file that
    imports minicct is flagged (FLAG line, "FLAGGED" in its result, "!" in the class table, the JSON/CSV).
Exit code: 0 when every case passes, 1 when something fails or is not yet implemented, 2 on a usage error.
"""
import argparse
import os
import sys


def _common(p):
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="time limit of one call of a student's function (default 20 s; 0: none)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    p.add_argument("--csv", default=None, metavar="FILE", help="write cases passed per function as CSV")
    p.add_argument("--extra", default=None, metavar="DIR",
                   help="the instructor's own cases: DIR/exNN_cases.py with grade(session), kept outside the repo")


def main(argv=None):
    from . import class_table, get_exercise, grade, grade_class, grade_folder, list_text, write_results

    parser = argparse.ArgumentParser(prog="python -m minicct.exercises",
                                     description="Grade the minicct classroom exercises against minicct itself.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the exercises")
    p = sub.add_parser("check", help="grade one exercise (or all)")
    p.add_argument("exercise", help="exercise number (1..7, 01, ex01) or 'all'")
    p.add_argument("--file", help="the student's file (default: the one in lessons/exercises)")
    p.add_argument("--dir", help="with 'all': the folder holding the exNN_*.py files")
    _common(p)
    c = sub.add_parser("class", help="grade every student folder of a class folder; one summary table")
    c.add_argument("folder", help="CLASS_FOLDER holding one sub-folder of exNN_*.py files per student")
    _common(c)
    args = parser.parse_args(argv)

    if args.command == "list":
        print(list_text())
        return 0
    kw = dict(seed=args.seed, time_limit=args.time_limit, extra=args.extra)
    try:
        if args.command == "class":
            results = grade_class(args.folder, **kw)
            print(class_table(results))
            ok = all(r["status"] == "passed" for res in results.values() for r in res)
        else:
            if args.exercise.lower() == "all":
                if args.file:
                    parser.error("--file names one exercise's file; with 'all' use --dir")
                res = grade_folder(args.dir, **kw)
                text = "\n\n".join(r["report"] for r in res) + "\n\nSummary\n" + "\n".join(
                    f"  {r['id']}  {r['report'].splitlines()[-1].split(': ', 1)[1]}" for r in res)
            else:
                if args.dir and args.file:
                    parser.error("give --file or --dir, not both")
                e = get_exercise(args.exercise)
                file = args.file or (os.path.join(args.dir, e.filename) if args.dir else None)
                res = [grade(e.id, file, **kw)]
                text = res[0]["report"]
            print(text)
            results = {"student": res}
            ok = all(r["status"] == "passed" for r in res)
        for path in write_results(results, args.json, args.csv):
            print(f"written: {path}")
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
