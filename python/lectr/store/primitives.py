"""The few operations each backend implements, on which the SQL written once
for both (control plane, request log, insights) runs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from lectr.errors import Conflict

# One statement and its parameters; SQL uses `%s` placeholders (SQLite's
# primitives translate them).
Op = tuple[str, tuple[Any, ...]]


class Duplicate(Conflict):
    """`_mutate` hit a uniqueness violation."""


class MissingReference(Conflict):
    """`_mutate` hit a foreign key pointing at no row."""


class Primitives(ABC):
    """What a backend implements for the SQL written once (the areas of the
    store build on it); abstract, so a backend missing one fails when it is
    built, not at its first call."""

    @abstractmethod
    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        """The rows of one query."""

    @abstractmethod
    async def _snapshot(self, queries: list[Op]) -> list[list[Any]]:
        """The rows of each query, all read in one transaction, so that they
        see the same state."""

    @abstractmethod
    async def _mutate(self, ops: list[Op], missing: str | None = None) -> None:
        """Run `ops` in one transaction that also bumps the control version.
        Raises NotFound(missing) if the first op (or an UPDATE) touched no
        row; Conflict on an integrity violation (Duplicate or
        MissingReference where the driver tells which)."""

    @abstractmethod
    async def _exec(self, ops: list[Op]) -> list[int]:
        """Run `ops` in one transaction (no control-version bump); the row
        count of each."""

    @abstractmethod
    async def _exec_many(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one statement per row, in one transaction."""
