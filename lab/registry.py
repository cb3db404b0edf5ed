"""Name → entry tables (models, judges, training conditions) that refuse a second entry under one name."""

from __future__ import annotations

from typing import TypeVar

from lab.errors import LabError

T = TypeVar("T")


class Registry(dict[str, T]):
    """A dict whose `add` raises on a name already taken, so a plug-in never silently replaces a built-in."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise LabError(f"{self.what} '{name}' is already registered")
        self[name] = entry
        return entry
