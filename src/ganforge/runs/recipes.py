"""One recipe book for every task: named presets, each a config class's defaults plus what it changes.

A task declares its book once (`RECIPES = RecipeBook("recipe", GANConfig)`) and each preset as the
source it reproduces and the keys it changes. The book is a :class:`~ganforge.registry.Registry`,
so an unknown name is one line that lists the valid ones, and tests can walk every recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from ganforge.config import Config
from ganforge.registry import Registry

C = TypeVar("C", bound=Config)


@dataclass(frozen=True)
class Recipe(Generic[C]):
    name: str
    source: str  # the tutorial, paper, book or measurement it reproduces
    about: str  # what it is, in a few words
    config: C


class RecipeBook(Registry[Recipe]):
    """The named presets of one config class."""

    def __init__(self, kind: str, base: type[Config]) -> None:
        super().__init__(kind)
        self.base = base

    def add(self, name: str, source: str, about: str, **changes: Any) -> Recipe:
        """Register a recipe: the config class's defaults with `changes`."""
        return self.register(name, Recipe(name, source, about, replace(self.base(), recipe=name, **changes)))

    def config(self, name: str) -> Config:
        """A fresh copy of the named recipe's config."""
        return replace(self.get(name).config)

    def reference(self, name: str) -> tuple[dict[str, Any] | None, str]:
        """The defaults of recipe `name` and the source it reproduces ((None, "") when unknown: a
        renamed, removed or custom recipe has nothing to compare against)."""
        if name not in self:
            return None, ""
        entry = self.get(name)
        return entry.config.to_dict(), entry.source

    def print_config(self, name: str, as_json: bool = False) -> int:
        """`config RECIPE`: every key of the named recipe's config, its value, type and meaning."""
        import json

        from ganforge.config import describe

        rows = describe(self.get(name).config)
        if as_json:
            print(json.dumps(rows, indent=2))
            return 0
        width = max(len(r["key"]) for r in rows)
        values = {r["key"]: json.dumps(r["value"]) for r in rows}
        vwidth = min(28, max(len(v) for v in values.values()))
        for r in rows:
            extra = f" [{', '.join(map(str, r['choices']))}]" if r["choices"] else ""
            resumable = " (may change on --resume)" if r["resume"] else ""
            print(f"{r['key']:<{width}}  {values[r['key']]:<{vwidth}}  {r['help']}{extra}{resumable}")
        return 0


def print_recipes(rows: list[dict[str, Any]], as_json: bool, header: str, line) -> int:
    """`recipes`: each row as `line(row)` under `header`, then what each recipe is and its source
    (`rows` carry name, about and source); with `as_json`, the rows as JSON."""
    import json

    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(header)
    for row in rows:
        print(line(row))
    print()
    for row in rows:
        print(f"{row['name']}: {row['about']}. Source: {row['source']}.")
    return 0
