"""`Task`: what the shared rooms (the CLI, the run skeleton, the report) know about one task.

Each task's package registers one record in :data:`TASKS` from its own `task.py` (gan/task.py,
detect/task.py, ...). The shared rooms never name a task: they call :func:`tasks`, which imports
every `ganforge/<package>/task.py` there is, and read what they need from the records. A third
task therefore costs its own folder and nothing else.

This module imports no task and nothing heavy: it is the lowest shared room.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ganforge.registry import Registry

if TYPE_CHECKING:
    from ganforge.runs.folder import RunFolder
    from ganforge.runs.recipes import RecipeBook
    from ganforge.runs.state import RunState


@dataclass(frozen=True)
class Chart:
    """A chart of the report: series `keys` of the log rows of kind `source` against the step.
    `keys` is a tuple of names, or one string that a key must contain."""

    id: str
    title: str
    source: str  # "train" or "eval"
    keys: tuple[str, ...] | str
    range: tuple[float, float] | None = None
    note: str = ""


@dataclass(frozen=True)
class Pictures:
    """Pictures a run writes over time into `folder` (one grid per snapshot), shown as a slider
    with the animations `gifs` beside it."""

    folder: str
    key: str  # the report's id for them (its sections are <run>-<key> and <run>-<key>-s)
    title: str
    what: str  # what one picture shows, for its alt text
    gifs: tuple[str, ...] = ()
    gif_key: str = ""  # a config key naming one more GIF in the run folder
    gif_what: str = "the pictures as an animation"
    name_key: str = ""  # a config key holding the pictures' file name template
    nav: str = ""  # its link in the page's navigation
    note: str = ""  # said under the pictures (e.g. what they leave out)
    grey_note: str = ""  # said when the first pictures are uniform grey: why that is expected


@dataclass(frozen=True)
class Report:
    """What the report draws and summarises for a task's runs."""

    pictures: tuple[Pictures, ...] = ()
    charts: tuple[Chart, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # log key -> its name on the page
    eval_columns: tuple[tuple[str, str], ...] = ()  # (key, title) of the evaluation table
    eval_protocol: Callable[[dict], str] | None = None  # from the run's config, how its evaluations ran
    eval_notes: Callable[[dict], str] | None = None  # HTML under eval.json's scores, from eval.json
    facts: tuple[tuple[str, str], ...] = ()  # (summary key, label) added to the page's header
    # per-class scores: (their eval field, the section's title, the bars' caption, the nav link)
    per_class: tuple[str, str, str, str] = ("", "", "", "")


@dataclass(frozen=True)
class Task:
    """One task: its name, commands, config, recipes, run, loop, run folder, report and loader."""

    name: str  # "gan", "detect"; summary.json's `task`
    command: str  # its train command as a person types it, e.g. "ganforge detect train"
    config: type  # its RunConfig subclass
    recipes: "RecipeBook"
    make_run: Callable[..., "RunState"]  # (cfg, run_dir, quiet) -> the run, set up
    loop: Callable[..., Path]  # (run, folder, log) -> run folder: the task's own plain loop
    finish: Callable[..., None]  # (run, folder, status, log, stop_reason): summary and end-of-run outputs
    add_commands: Callable[[argparse._SubParsersAction], None]  # its commands on the root parser
    loader: str  # "module:function" of load_trained(run_dir, checkpoint=None, device="cpu")
    outputs: tuple[str, ...]  # sub-folders of its run folder
    listing: tuple[str, ...]  # what a finished train command points at in the run folder
    default_out: str = "runs/{recipe}"  # the run folder when --out is not given
    data_path: Callable[[Any], Path | None] = lambda cfg: None  # a path the run trains on (kept safe)
    report: Report = field(default_factory=Report)
    # (cfg, tensors, meta, where) on resume, before the run is built: refuse a checkpoint whose
    # config would build absurd shapes, naming the tensor, before anything is allocated
    check_state: Callable[..., None] | None = None
    examples_from: str = ""  # "module:function" of (run_dir, n) -> ([(name, PNG bytes)], notes): inputs to try
    findings_from: str = ""  # "module:function" of (run_dir) -> dict: eval's findings, for the served page

    def examples(self, run: str | Path, n: int, **options) -> tuple[list[tuple[str, bytes]], list[str]]:
        """Up to `n` example inputs of a trained run (a detector's validation images), for the
        served page; none where the task has no such inputs. `options`: what the task's function
        takes besides (a translation run's `direction`)."""
        if not self.examples_from:
            return [], []
        module, _, name = self.examples_from.partition(":")
        return getattr(importlib.import_module(module), name)(Path(run), n, **options)

    def findings(self, run: str | Path) -> dict:
        """What an evaluation found about a trained run that the served page shows beside its
        controls (a GAN's class fidelity and InfoGAN codes); empty where the task has none."""
        if not self.findings_from:
            return {}
        module, _, name = self.findings_from.partition(":")
        return getattr(importlib.import_module(module), name)(Path(run))

    def load(self, run: str | Path, checkpoint: str | None = None, device: str = "cpu") -> Any:
        """A trained run ready for use (module, config, example input, pre- and post-processing),
        from the task's loader, imported only when asked for."""
        module, _, name = self.loader.partition(":")
        return getattr(importlib.import_module(module), name)(run, checkpoint, device)

    def folder(self, path: str | Path) -> "RunFolder":
        from ganforge.runs.folder import RunFolder

        return RunFolder(path, outputs=self.outputs, command=self.command)


TASKS: Registry[Task] = Registry("task")


def tasks() -> Registry[Task]:
    """Every task of this ganforge: each package with a `task.py` registers itself on import."""
    import ganforge

    for info in pkgutil.iter_modules(ganforge.__path__):
        if info.ispkg and (Path(info.module_finder.path) / info.name / "task.py").is_file():
            importlib.import_module(f"ganforge.{info.name}.task")
    return TASKS


def task_of(summary: dict | None, config: dict | None) -> Task:
    """The task that wrote a run folder: summary.json's or config.json's `task`, else (runs written
    before either recorded it) the task whose config shares the most keys with config.json."""
    from dataclasses import fields

    registry = tasks()
    name = (summary or {}).get("task") or (config or {}).get("task")
    if name in registry:
        return registry.get(name)
    keys = set(config or {})
    return max(registry.values(), key=lambda t: len(keys & {f.name for f in fields(t.config)}))
