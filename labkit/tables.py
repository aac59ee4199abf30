"""The lab's tables: pandas DataFrames that show as cards in a notebook (links clickable, times in
UTC, "open" for a problem still open, a log's content whole with its status code).

They are DataFrames in every other way (filter, head, columns), so code reading them is unchanged;
a slice stays a table of the same kind. pandas is imported here, so this module is imported only
where a frame is made.
"""
from __future__ import annotations

import pandas as pd

from labkit import cards


class _Table(pd.DataFrame):
    _card = "error_logs"  # the cards function that draws it

    @property
    def _constructor(self):
        return type(self)

    def _repr_html_(self) -> str:
        return getattr(cards, self._card)(self)


class Problems(_Table):
    _card = "problems"


class ChangeEvents(_Table):
    _card = "change_events"


class Logs(_Table):
    _card = "error_logs"


class Flags(_Table):
    _card = "flags"


def shown_as(kind: type[_Table], frame: pd.DataFrame) -> _Table:
    """`frame` as a table of `kind`, its attrs (the Dynatrace link) kept."""
    table = kind(frame)
    table.attrs.update(frame.attrs)
    return table
