"""Named registries: the names are the API (the CLI vocabulary, config values, JSON fields).

A registry maps a name to an object (a builder, a loss, a dataset's description, a metric). Asking
for a name it does not hold is a one-line :class:`~ganforge.errors.ConfigError` that lists the valid
ones, and config validation reads its choices from the same registry, so a name is declared once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from ganforge.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """`register(name)` as a decorator, or `register(name, obj)`; `get(name)`; `names()`."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind  # what a name names, for messages: "model", "loss", "dataset", ...
        self.plural = plural or f"{kind}s"
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name, obj=None):
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.plural}: "
                              f"{', '.join(self._items)}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def values(self) -> list[T]:
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
