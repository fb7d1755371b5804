"""The project's one kind of user-facing failure, and the wrapper every command line runs in.

Bad input (a file, a flag, a checkpoint) raises `DataError("file:line: problem; what to do")`;
`run_cli` prints it as one line on stderr and exits with status 1, never a traceback. Kept apart
from data.py so that model.py can raise it without importing the data stack.
"""

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
