"""README.md teaches: every link lands where it says, every code anchor on the line it names, every
metric in a table is defined on the page, no table is wider than 6 columns, the method's forward
fits on one screen, and every train.py command it shows parses."""

import inspect
import re

from loss import SemCLIPLoss
from train_flags import parse_args

from conftest import ROOT, commands

README = (ROOT / "README.md").read_text()
LINK = re.compile(r"\[([^\]]+)\]\(([^)#\s]+)(?:#([^)\s]+))?\)")


def tables(text):
    """Each markdown table as a list of rows, each a list of cells."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            found.append(current)
            current = []
    return found


def test_every_relative_link_exists_and_every_line_anchor_holds_what_the_link_names():
    for text, target, anchor in LINK.findall(README):
        if target.startswith("http"):
            continue
        assert (ROOT / target).exists(), target
        if anchor and anchor.startswith("L"):
            line = (ROOT / target).read_text().splitlines()[int(anchor[1:]) - 1]
            row = next((r for r in README.splitlines() if f"]({target}#{anchor})" in r), "")
            equation = re.match(r"\|\s*`([^`]+)`", row)
            if equation:  # a row of the method's table: the equation is written above its line of code
                assert equation[1].split(" = ")[0] in line and "=" in line, (anchor, line)
            else:  # a function named in the reading path, or a term in the prose
                symbol = re.findall(r"`([^`]+)`", text)[0].split(".")[-1]
                assert f"def {symbol}" in line or f"{symbol} =" in line, (text, anchor, line)


def test_no_table_is_wider_than_six_columns():
    for table in tables(README):
        assert len(table[0]) <= 6, table[0]


def test_every_metric_in_a_table_is_defined_on_the_page():
    prose = "\n".join(line for line in README.splitlines() if not line.startswith("|"))
    metrics = {cell for table in tables(README) for cell in table[0] if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", cell)}
    assert metrics, "no metric columns found"
    for metric in metrics:
        assert re.search(rf"`{metric}`", prose), f"{metric} is shown in a table but never defined"


def test_the_method_reads_on_one_screen():
    source = inspect.getsource(SemCLIPLoss.forward)
    assert len([line for line in source.splitlines() if line.strip()]) <= 40


def test_every_train_command_on_the_page_parses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # commands name --out folders: runs of one's own in out/ must not clash
    code = "\n".join(line for line in README.splitlines() if line.startswith("    "))  # the code blocks
    train_commands = commands(code, "train.py")
    assert any(line.rstrip().endswith("# best recipe") for line in README.splitlines())
    assert len(train_commands) >= 5
    for argv in train_commands:
        if "--init" in argv:  # the reader's own weights: parsing checks that the file exists
            (tmp_path / argv[argv.index("--init") + 1]).touch()
        parse_args(argv)  # a flag that does not exist, or a value out of range, exits here
