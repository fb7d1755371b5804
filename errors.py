"""The project's one kind of user-facing failure, and the wrapper every command line runs in.

Bad input (a file, a flag, a checkpoint) raises `DataError("file:line: problem; what to do")`;
`run_cli` prints it as one line on stderr and exits with status 1, never a traceback. Kept apart
from data.py so that model.py can raise it without importing the data stack.
"""

import argparse
import math
import operator
import sys


class DataError(Exception):
    """Bad input: the message names the file, the line, the problem and the fix."""


def printable(text) -> str:
    """Text from a file, fit for a one-line message: a damaged file's control characters (line
    breaks among them) are shown escaped, as Python writes them."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


def one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker wrapped it with a traceback."""
    last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return last.removeprefix(f"{DataError.__module__}.DataError: ").removeprefix("DataError: ")


def run_cli(main, failures=(DataError,)):
    """Run a command line: each of `failures` becomes one line on stderr and exit status 1."""
    try:
        main()
    except failures as error:
        sys.exit(f"error: {one_line(error)}")
    except KeyboardInterrupt:
        sys.exit("interrupted")


def number(kind=float, above=None, at_least=None, at_most=None, below=None):
    """An argparse `type=`: a finite `kind` within the bounds. A value outside them is argparse's
    usage line and exit status 2 ("argument --lr: -1 is not > 0"), never a traceback later on.
    Standard library only, so gen_triplets.py can use it too."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        bounds = ((above, operator.gt, ">"), (at_least, operator.ge, ">="), (at_most, operator.le, "<="),
                  (below, operator.lt, "<"))
        for bound, holds, word in bounds:
            if bound is not None and not holds(value, bound):
                raise argparse.ArgumentTypeError(f"{text} is not {word} {bound}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive = number(above=0)                    # --lr, --timeout, --temperature
non_negative = number(at_least=0)             # --weight-decay, --grad-clip (0 = off)
fraction = number(at_least=0, at_most=1)      # --true-negations
count = number(int, at_least=1)               # --steps, --batch-size
non_negative_int = number(int, at_least=0)    # --workers, --warmup
