"""labkit: the Dynatrace "introduce a change" lab as a Jupyter workbook and a CLI.

`lab = labkit.connect()` finds the lab (a tenant and cluster when configured, else the local lab)
and offers the workshop steps as methods. Heavy libraries load only when a step needs them.
"""
from labkit.errors import BadInput, Forbidden, LabError, LabTimeout, NotFound, Unreachable

__version__ = "0.1.0"
__all__ = ["connect", "LabError", "BadInput", "NotFound", "Forbidden", "LabTimeout", "Unreachable"]


def connect(*args, **kwargs):
    """The lab to work on: see labkit.lab.connect."""
    from labkit.lab import connect as _connect

    return _connect(*args, **kwargs)
