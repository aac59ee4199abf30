"""A notebook kernel's view of labkit's errors: a LabError, or a NameError for the lab's variables
after a kernel restart, shows as one sentence saying what to do, not as a traceback into labkit.

`install_hooks()` registers it with IPython; labkit.connect() calls it, and every kernel the
workbook starts runs it first (PYTHONSTARTUP = KERNEL_STARTUP), so it also covers a cell run
before `lab = labkit.connect()` after a restart.
"""
from __future__ import annotations

from pathlib import Path

from labkit.errors import LabError

#: Run by each workbook kernel at start (PYTHONSTARTUP): installs the hooks below before any cell runs.
KERNEL_STARTUP = Path(__file__).with_name("_kernel_startup.py")
# Names the notebooks define; after a kernel restart they are gone.
FIRST_CELL = {"lab", "labkit", "widgets"}
LATER_CELLS = {"switch", "served", "event", "traffic", "logs", "problems", "runbook", "checks"}


def _in_labkit(tb) -> bool:
    """True when the traceback passes through labkit's own code (not only the user's)."""
    here = str(Path(__file__).resolve().parent)
    while tb is not None:
        if str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(here):
            return True
        tb = tb.tb_next
    return False


def error_sentence(exc: BaseException) -> str | None:
    """What a cell's error means for an attendee, as one sentence; None: show the usual traceback."""
    name = getattr(exc, "name", None)
    if isinstance(exc, KeyboardInterrupt) and _in_labkit(exc.__traceback__):
        return ("Interrupted: the step stopped where it was (flagd is never left scaled to 0). Run the "
                "cell again to finish it: each step reads the lab's state first and does only what is "
                "left.")
    if isinstance(exc, NameError) and name in FIRST_CELL:
        return (f"`{name}` is not defined in this kernel: it was restarted (or this notebook was just "
                "opened), so the lab's variables are gone. Run the notebook's first code cell "
                "(`lab = labkit.connect()`), then this one.")
    if isinstance(exc, NameError) and name in LATER_CELLS:
        return (f"`{name}` is not defined in this kernel: it was restarted, or the cell that makes "
                f"`{name}` has not run. Run the cells above from the top (Run > Run All Above "
                "Selected Cell), then this one.")
    if isinstance(exc, LabError):
        return str(exc)
    return None


def _show_as_sentence(shell, etype, value, tb, tb_offset=None):
    said = error_sentence(value)
    if said is None:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    shell._showtraceback(etype, value, [f"{etype.__name__}: {said}"])  # the error output, one line
    return None


def install_hooks(shell=None) -> bool:
    """In an IPython kernel: a labkit error, or a NameError for the lab's variables after a kernel
    restart, shows as one sentence saying what to run, not as a traceback into labkit. True when
    installed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = shell or get_ipython()
    if shell is None:
        return False
    shell.set_custom_exc((NameError, LabError, KeyboardInterrupt), _show_as_sentence)
    return True
