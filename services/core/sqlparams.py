"""Positional parameters of one SQL statement. Pure.

Every piece of a statement (the list filter, the keyset cursor, the query language) binds its values
through the statement's one ``Params``, so placeholders are numbered in the order values are added and
no piece needs to know how many came before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Params:
    __slots__ = ("values",)

    def __init__(self, values: Iterable[Any] = ()) -> None:
        self.values: list[Any] = list(values)

    def add(self, value: Any, cast: str | None = None) -> str:
        """Bind ``value``; returns its placeholder, ``$n`` or ``$n::cast``."""
        self.values.append(value)
        return f"${len(self.values)}" if cast is None else f"${len(self.values)}::{cast}"

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Params({self.values!r})"
