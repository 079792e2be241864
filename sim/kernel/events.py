"""The run's event log: named, append-only tables that observers write during a run.

Protocols record what happens (a saga step sent, a message delivered, a participant
prepared) into channels of the world's :class:`EventLog`; after the run each channel
becomes a DataFrame. A channel is the observer's notebook, not node state: crashes do
not touch it. Recording is one tuple append, so it stays cheap on hot paths.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["Channel", "EventLog"]


class Channel:
    """One table of the event log: ``record(*row)`` appends a row in column order."""

    __slots__ = ("name", "columns", "dtypes", "rows")

    def __init__(self, name: str, columns: Sequence[str], dtypes: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.columns = tuple(columns)
        self.dtypes = dict(dtypes or {})
        unknown = set(self.dtypes) - set(self.columns)
        if unknown:
            raise ValueError(f"channel {name!r}: dtypes for unknown columns {sorted(unknown)}")
        self.rows: list[tuple[Any, ...]] = []

    def record(self, *row: Any) -> None:
        self.rows.append(row)

    def __deepcopy__(self, memo: dict[int, Any]) -> Channel:
        return self  # the observer's notebook: a copy of a node's disk that refers to it shares it

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def dicts(self) -> list[dict[str, Any]]:
        """Rows as dicts (handy in tests)."""
        return [dict(zip(self.columns, r)) for r in self.rows]

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with the channel's columns and dtypes (also when empty)."""
        df = pd.DataFrame.from_records(self.rows, columns=list(self.columns))
        if self.dtypes:
            if len(df):
                df = df.astype(self.dtypes)
            else:
                df = df.astype({**dict.fromkeys(self.columns, object), **self.dtypes})
        return df


class EventLog:
    """The channels of one run, by name."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> EventLog:
        return self  # not node state (see Channel.__deepcopy__)

    def channel(self, name: str, columns: Sequence[str], dtypes: Mapping[str, str] | None = None) -> Channel:
        """The channel ``name``, created on first use; asking again with other columns is an error."""
        ch = self._channels.get(name)
        if ch is None:
            ch = self._channels[name] = Channel(name, columns, dtypes)
        elif ch.columns != tuple(columns):
            raise ValueError(f"channel {name!r} exists with columns {ch.columns}, not {tuple(columns)}")
        return ch

    def __getitem__(self, name: str) -> Channel:
        return self._channels[name]

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def names(self) -> list[str]:
        return list(self._channels)

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every channel as a DataFrame, in the order the channels were created."""
        return {name: ch.frame() for name, ch in self._channels.items()}
