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
    _open = ()  # time columns where a missing time means "still open"

    @property
    def _constructor(self):
        return type(self)

    def _repr_html_(self) -> str:
        return getattr(cards, self._card)(self)

    def __repr__(self) -> str:
        """The table as text (a terminal, GitHub): missing times read "open" or "—", never NaT."""
        shown = pd.DataFrame(self)
        for column in shown.columns:
            if pd.api.types.is_datetime64_any_dtype(shown[column]) and shown[column].isna().any():
                text = shown[column].astype(object).where(shown[column].notna(),
                                                          "open" if column in self._open else "—")
                shown[column] = text
        return repr(shown)


class Problems(_Table):
    _card = "problems"
    _open = ("end",)


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
