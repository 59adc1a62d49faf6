"""What a run prints, for a person at a terminal and for one reading the run folder later.

- Progress bars only on a terminal: redirected to a file (a cluster job's log) a bar is a wall of
  carriage returns, so there the one-line-per-epoch summaries are all that is written. TQDM_DISABLE=1
  turns them off everywhere, as it does for tqdm itself; UMURL_PROGRESS_BARS=1 draws them into a
  redirected stream too (for `tail -f` of a log, and for the tests that watch a run's progress).
- `copy_output_to(path)`: everything the process prints from then on is also appended to a plain
  `train.log` in the run folder, as the released scripts kept one with `tee -a`; progress bars stay
  on the terminal only.

No torch import: data-preparation workers use this module too.
"""
import os
import sys
import traceback
from contextlib import contextmanager

from tqdm import tqdm


def _set(variable):
    """An environment variable set to anything but '', 0, false or no."""
    return os.environ.get(variable, "").strip().lower() not in ("", "0", "false", "no")


def terminal_stream():
    """The stream progress bars go to: stderr as the user sees it, never its copy into train.log."""
    return getattr(sys.stderr, "terminal", sys.stderr)


def bars_wanted():
    stream = terminal_stream()
    if _set("TQDM_DISABLE"):
        return False
    return _set("UMURL_PROGRESS_BARS") or (hasattr(stream, "isatty") and stream.isatty())


def progress_bar(iterable=None, *, disable=False, **kwargs):
    """tqdm, shown only on a terminal (see the module docstring); `disable` turns it off as well."""
    return tqdm(iterable, disable=disable or not bars_wanted(), file=terminal_stream(), **kwargs)


class _Copy:
    """A text stream that writes to `terminal` and to `log` alike."""

    def __init__(self, terminal, log):
        self.terminal, self.log = terminal, log

    def write(self, text):
        self.log.write(text)
        return self.terminal.write(text)

    def flush(self):
        self.log.flush()
        self.terminal.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding...: the terminal's
        return getattr(self.terminal, name)


@contextmanager
def copy_output_to(path):
    """Append what this process prints to stdout and stderr to `path` too, while the block runs.

    An exception that ends the block is written to the file as well (Python prints it to the terminal
    only after the block has ended), and so is a SystemExit's message.
    """
    log = open(path, "a", buffering=1)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Copy(saved[0], log), _Copy(saved[1], log)
    try:
        yield
    except SystemExit as stop:
        if isinstance(stop.code, str):
            log.write(stop.code + "\n")
        raise
    except BaseException:
        log.write(traceback.format_exc())
        raise
    finally:
        sys.stdout, sys.stderr = saved
        log.close()
