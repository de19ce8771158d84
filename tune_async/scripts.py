"""The ``tune-async`` command (1.x ``tune``, ``ray.tune.scripts``).

    tune-async ls <experiment dir> [--sort k1,k2] [--desc] [--filter "loss < 0.5"]
                                   [--columns a,b] [--limit N] [--output table|csv|json|FILE]
    tune-async lsx <project dir>   (same options)
    tune-async rm <experiment or trial dir> [--yes]
    tune-async add-note <dir> [--filename note.txt]

``list-trials`` and ``list-experiments`` are 1.x's long names for ``ls``/``lsx``.
``python -m tune_async`` runs the same command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tune_async import commands

_TRUE, _FALSE = ("1", "true", "yes", "y"), ("0", "false", "no", "n")


def _normalize_desc(argv: Sequence[str]) -> list[str]:
    """1.x spelled it ``--desc True``; a bare ``--desc`` works too, also before the path."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        value = None
        if arg.startswith("--desc="):
            value = arg.split("=", 1)[1]
        elif arg == "--desc" and i + 1 < len(args) and args[i + 1].lower() in _TRUE + _FALSE:
            value = args[i + 1]
            i += 1
        if value is None:
            out.append(arg)
        elif value.lower() in _TRUE:
            out.append("--desc")
        elif value.lower() not in _FALSE:
            out.append(arg)  # argparse reports it
        i += 1
    return out


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_listing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sort", type=_csv_list, default=None,
                        help="Column(s) to sort on, comma-separated.")
    parser.add_argument("--desc", action="store_true",
                        help="Sort descending (1.x's --desc True works too).")
    parser.add_argument("--filter", dest="filter_op", action="append", default=None,
                        metavar="'<column> <operator> <value>'",
                        help='Keep rows where this holds, e.g. "loss < 0.5" (operators '
                             "< <= == != >= >); repeat to require several.")
    parser.add_argument("--columns", type=_csv_list, default=None,
                        help="Column(s) to show, comma-separated.")
    parser.add_argument("--limit", type=int, default=None, help="Show at most N rows.")
    parser.add_argument("--output", "-o", default=None,
                        help="table (default), csv or json; or a file to save the rows to "
                             "(.csv, .json, .pkl), as 1.x.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tune-async", description="Inspect and manage tune_async experiments on disk.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, aliases in (("ls", ["list-trials"]), ("lsx", ["list-experiments"])):
        trials = name == "ls"
        p = sub.add_parser(
            name, aliases=aliases,
            help=("List the trials of an experiment." if trials
                  else "List the experiments in a project directory."))
        p.add_argument("path", metavar="EXPERIMENT_DIR" if trials else "PROJECT_DIR")
        _add_listing_options(p)
        p.set_defaults(run=_list_trials if trials else _list_experiments)

    p = sub.add_parser("rm", help="Delete an experiment or trial directory (asks first).")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--yes", "-y", action="store_true", help="Do not ask for confirmation.")
    p.set_defaults(run=_remove)

    p = sub.add_parser("add-note", help="Add a note to a directory with $EDITOR.")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--filename", default="note.txt", help="Name of the note file.")
    p.set_defaults(run=lambda a: commands.add_note(a.path, a.filename))
    return parser


def _listing_args(args: argparse.Namespace) -> dict:
    return {"sort": args.sort, "output": args.output, "filter_op": args.filter_op,
            "info_keys": args.columns, "limit": args.limit, "desc": args.desc}


def _list_trials(args: argparse.Namespace) -> None:
    commands.list_trials(args.path, **_listing_args(args))


def _list_experiments(args: argparse.Namespace) -> None:
    commands.list_experiments(args.path, **_listing_args(args))


def _remove(args: argparse.Namespace) -> int:
    removed = commands.remove(args.path, confirm=lambda what: args.yes or _ask(f"Delete {what}?"))
    print(f"Deleted {args.path}" if removed else "Nothing deleted.")
    return 0 if removed else 1


def _ask(question: str) -> bool:
    """A yes/no prompt on the terminal; no answer (end of input) means no."""
    sys.stdout.write(f"{question} [y/N]: ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_normalize_desc(argv))
    try:
        code = args.run(args)
    except commands.CommandError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `tune-async ls ... | head`
        return 0
    return code if isinstance(code, int) else 0


def cli(argv: Sequence[str] | None = None) -> None:
    """1.x's ``ray.tune.scripts.cli``: run the command line and exit with its status."""
    sys.exit(main(argv))


if __name__ == "__main__":
    cli()
