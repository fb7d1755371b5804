"""Results files and the tables rendered from them: every number on a page comes from a committed JSON.

A results file is eval.py's results JSON (train.py's OUT/results.json, `eval.py --out`, bench/ablate.py's
OUT/<row>_s<S>/results.json): {"bench", "checkpoint", "n", "metrics": {name: number}, ..., "provenance":
provenance(seed)}, the provenance saying how to make the file again: the command as typed, the seed, the
thread count, the commit, the date and the machine.

A table on a page (README.md, docs/*.md) sits between two marker lines; the opening one holds its spec,
one statement a line:

    <!-- results: quickstart
    label `--loss`
    metrics orig_over_neg t2i_r1 trueneg_over_falseaff
    row `semclip` results/quickstart/semclip/results.json
    row `clip` results/quickstart/clip_s*/results.json
    -->
    (what `python results.py` renders: the table, then a line naming commands, seeds, threads and commit)
    <!-- /results -->

- `<!-- results: NAME`: the table's name on its page, named in every message about it.
- `metrics M1 M2 ...`: the columns; a name is looked up in a file's "metrics", else among its top-level
  numbers (bench/ablate.py's "train_s").
- `row LABEL GLOB [GLOB ...]`: a row, in the order written; the files its globs match (relative to the
  repository root) are one run per seed. One file shows its value, several "mean ± sample std" and
  "(N seeds)" after the label. A label with spaces is quoted: row "semclip 600" results/...
- `label TEXT`: the first column's header (default "run"; "metric" with `transpose`).
- `transpose`: metrics down, rows across (many metrics, few rows).
At most 6 columns: a wider table does not fit a page and is refused. Everything between the markers is
rewritten on each rendering: edit the spec or the results files, never the table.

    python results.py            # re-render every table in README.md and docs/*.md, say which changed
    python results.py --check    # exit 1 if a page differs from its results files (tests/test_results.py)
"""

import argparse
import glob
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from errors import DataError, run_cli

ROOT = Path(__file__).resolve().parent
MAX_COLUMNS = 6
PAGE_WIDTH = 100  # the pages' prose wraps here
TABLE = re.compile(r"(?P<opening>^<!-- results:(?P<spec>.*?)-->\n)(?P<body>.*?)(?P<closing>^<!-- /results -->$)",
                   re.MULTILINE | re.DOTALL)
OPENING = re.compile(r"^<!-- results:", re.MULTILINE)


def provenance(seed=None) -> dict:
    """How a results file was made, for the line under its table: the command as typed, the seed, the
    thread count and the commit (null outside a git checkout; "+dirty" with uncommitted tracked changes)."""
    import torch  # here alone: rendering pages needs no torch

    return {"command": "python " + shlex.join(sys.argv), "seed": seed, "threads": torch.get_num_threads(),
            "commit": git_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}


def write_bench_results(path, bench, n, metrics, seed=None, **extra):
    """A benchmark's results file (bench/*.py --out FILE): eval.py's layout without a checkpoint, `extra`
    as top-level keys, and the provenance of this run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bench": bench, "checkpoint": None, "n": n, "metrics": metrics, **extra,
                                "provenance": provenance(seed)}, indent=2) + "\n")


def git_commit():
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine, or a hung one
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


# ----------------------------------------------------------------------------- the spec of one table

@dataclass
class Table:
    where: str  # "page:line: table 'name'", the start of every message about this table
    name: str
    metrics: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # [(label, [glob, ...])]
    label: str = None
    transpose: bool = False

    def fail(self, problem):
        raise DataError(f"{self.where}: {problem}")


def parse_spec(spec: str, page: str, line: int) -> Table:
    """A Table from the text between "<!-- results:" and "-->"; one DataError line on a bad statement."""
    lines = spec.strip().splitlines()
    name = lines[0].strip() if lines else ""
    if not re.fullmatch(r"[\w.-]+", name):
        raise DataError(f"{page}:{line}: a table needs a name right after `<!-- results:` (letters, digits, "
                        f"`_.-`), got {name!r}")
    table = Table(f"{page}:{line}: table '{name}'", name)
    for number, text in enumerate(lines[1:], line + 1):
        try:
            words = shlex.split(text)
        except ValueError as error:
            table.fail(f"line {number}: {error}; quote a label with spaces as \"a label\"")
        if not words:
            continue
        keyword, values = words[0], words[1:]
        if keyword == "metrics" and values:
            table.metrics += values
        elif keyword == "row" and len(values) >= 2:
            table.rows.append((values[0], values[1:]))
        elif keyword == "label" and len(values) == 1:
            table.label = values[0]
        elif keyword == "transpose" and not values:
            table.transpose = True
        else:
            table.fail(f"line {number}: cannot read {text.strip()!r}; a statement is `metrics M1 M2 ...`, "
                       "`row LABEL GLOB ...`, `label TEXT` or `transpose` (python results.py --help)")
    if not table.metrics or not table.rows:
        table.fail("needs a `metrics M1 M2 ...` line and at least one `row LABEL GLOB` line")
    columns = 1 + (len(table.rows) if table.transpose else len(table.metrics))
    if columns > MAX_COLUMNS:
        table.fail(f"{columns} columns, at most {MAX_COLUMNS} fit a page; split it into two tables"
                   + ("" if table.transpose else " or add `transpose` (metrics down)"))
    table.label = table.label or ("metric" if table.transpose else "run")
    return table


# ----------------------------------------------------------------------------- reading the results files

def read_results(path: Path, root: Path, table: Table) -> dict:
    shown = path.relative_to(root)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        table.fail(f"{shown}: not a results JSON ({str(error).splitlines()[0]}); write it again with the "
                   "command that made it")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        table.fail(f"{shown}: no \"metrics\" object; a results file is eval.py's results JSON")
    if not isinstance(record.get("provenance"), dict):
        table.fail(f"{shown}: no \"provenance\" (who made these numbers, and how); re-run the command that "
                   "wrote it, whose results now record it")
    record["path"] = shown
    return record


def row_runs(table: Table, globs, root: Path) -> list:
    """The results records of one row: every file its globs match, in name order, one per seed."""
    runs = []
    for pattern in globs:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            table.fail(f"{pattern}: a results file is committed in the repository; give its path from the root")
        paths = sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True))
        if not paths:
            table.fail(f"{pattern} matches no file; commit the results file or fix the path (relative to "
                       "the repository root)")
        runs += [read_results(path, root, table) for path in paths]
    seeds = [run["provenance"].get("seed") for run in runs]
    repeated = next((s for s in seeds if s is not None and seeds.count(s) > 1), None)
    if repeated is not None:
        table.fail(f"{len(runs)} files of one row have seed {repeated} ({', '.join(map(str, globs))}); "
                   "a row averages over seeds: keep one file per seed")
    return runs


def metric_value(run: dict, metric: str, table: Table) -> float:
    value = run["metrics"].get(metric, run.get(metric))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        found = "no such metric" if value is None else f"{value!r} is not a number"
        table.fail(f"{run['path']}: {metric}: {found} (it has {', '.join(run['metrics'])}); "
                   "fix the `metrics` line or re-run the command that wrote the file")
    return value


# ----------------------------------------------------------------------------- rendering

def cell(values) -> str:
    """One run: its value; several: mean ± sample std (the spread over seeds); 3 decimals."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def run_label(label, runs) -> str:
    return label if len(runs) == 1 else f"{label} ({len(runs)} seeds)"


def markdown_table(table: Table, rows: list) -> str:
    """rows: [(label, runs)]; a label column on the left, numbers right-aligned."""
    grid = [[run_label(label, runs)] + [cell([metric_value(r, m, table) for r in runs]) for m in table.metrics]
            for label, runs in rows]
    header = [table.label, *table.metrics]
    if table.transpose:
        grid = [list(column) for column in zip(header, *grid)]
        header, grid = grid[0], grid[1:]
    lines = [header, ["---"] + ["---:"] * (len(header) - 1), *grid]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def listed(items) -> str:
    return ", ".join("not recorded" if item is None else str(item) for item in items)


def provenance_line(runs: list) -> str:
    """Each command that made the table's files with its seeds and threads, then the commits."""
    by_command = {}
    for run in runs:
        made = run["provenance"]
        seeds, threads = by_command.setdefault(made.get("command", "command not recorded"), (set(), set()))
        seeds.add(made.get("seed"))
        threads.add(made.get("threads"))
    in_order = lambda values: sorted(values, key=lambda v: (v is None, v))  # noqa: E731 -- "not recorded" last
    made_by = "; ".join(f"`{command}` (seed{'s' * (len(seeds) > 1)} {listed(in_order(seeds))}; "
                        f"{listed(in_order(threads))} thread{'s' * (threads != {1})})"
                        for command, (seeds, threads) in by_command.items())
    commits = list(dict.fromkeys(run["provenance"].get("commit") for run in runs))
    line = f"Made by {made_by} at commit{'s' * (len(commits) > 1)} {listed(commits)}."
    return textwrap.fill(line, PAGE_WIDTH, break_long_words=False, break_on_hyphens=False)  # a code span may wrap


def render_table(table: Table, root: Path) -> str:
    """What belongs between the markers: the table and the line that says how to make it again."""
    rows = [(label, row_runs(table, globs, root)) for label, globs in table.rows]
    every_run = [run for _, runs in rows for run in runs]
    return f"\n{markdown_table(table, rows)}\n\n{provenance_line(every_run)}\n\n"


def render_page(text: str, page: str, root: Path):
    """(the page with every table re-rendered, [(table name, whether it changed)])."""
    tables, names = [], set()
    opened = [text.count("\n", 0, match.start()) + 1 for match in OPENING.finditer(text)]

    def rendered(match):
        line = text.count("\n", 0, match.start()) + 1
        if OPENING.search(match["body"]):
            raise DataError(f"{page}:{line}: no `<!-- /results -->` line before the next table; close each table")
        table = parse_spec(match["spec"], page, line)
        if table.name in names:
            table.fail("two tables of this name on the page; give each its own")
        names.add(table.name)
        body = render_table(table, root)
        tables.append((table.name, body != match["body"]))
        return match["opening"] + body + match["closing"]

    new_text = TABLE.sub(rendered, text)
    if len(tables) < len(opened):
        raise DataError(f"{page}:{opened[len(tables)]}: a `<!-- results:` table without its `<!-- /results -->` "
                        "line; add it on a line of its own after the table")
    return new_text, tables


def pages(root: Path) -> list:
    return [path for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if path.is_file()]


def parse_args():
    parser = argparse.ArgumentParser(
        description="Render every results table in README.md and docs/*.md from the committed results JSON "
                    "files its spec names (the spec syntax: this file's docstring, docs/results.md).",
        epilog="examples:\n"
               "  python results.py            # re-render every table in place, print which changed\n"
               "  python results.py --check    # exit 1, naming each table that differs from its files\n"
               "  python results.py --root /tmp/copy --check   # the pages and results of another checkout",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page differs")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="repository root: its README.md and docs/*.md, globs relative to it (default: here)")
    return parser.parse_args()


def main():
    args = parse_args()
    root = args.root.resolve()
    changed, total = [], 0
    for path in pages(root):
        page = str(path.relative_to(root))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"{page}: cannot be read ({error}); fix the page")
        new_text, tables = render_page(text, page, root)
        total += len(tables)
        changed += [f"{page}: table '{name}'" for name, differs in tables if differs]
        if new_text != text and not args.check:
            path.write_text(new_text, encoding="utf-8")
    for where in changed:
        print(f"{where} differs from its results files" if args.check else f"{where}: re-rendered")
    if args.check and changed:
        sys.exit(f"{len(changed)} of {total} tables differ from their results files; run `python results.py` "
                 "and commit the pages")
    print(f"{total} tables, {len(changed)} {'differ' if args.check else 're-rendered'}")


if __name__ == "__main__":
    run_cli(main)
