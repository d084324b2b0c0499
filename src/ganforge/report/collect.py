"""Read one run folder into a :class:`RunData`: everything the report shows, nothing rendered yet.

Reading is read-only and forgiving: a run is written while it is read (the report is rewritten at
every snapshot), so a damaged or half-written file becomes a note on the page, never a failure.
Only what makes a page impossible (not a run folder, nothing to look at yet) raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..documents import loads_json
from ..errors import DataError, GanforgeError
from ..io import read_metrics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
STILL_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

def recipe_reference(name: str, task: str = "gan") -> tuple[dict[str, Any] | None, str]:
    """The defaults of recipe `name` and the source it reproduces ((None, "") when unknown: a
    renamed, removed or custom recipe has nothing to compare against)."""
    if task == "detect":
        from ganforge.detect.recipes import RECIPES
    else:
        from ganforge.gan.recipes import RECIPES
    if name not in RECIPES:
        return None, ""
    entry = RECIPES.get(name)
    return entry.config.to_dict(), entry.source


def natural_key(path: Path) -> tuple:
    """Sort key that puts `img-9` before `img-10` (training order for numbered file names)."""
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", path.name) if t)


def _own_file(path: Path, root: Path) -> bool:
    """A plain file that really lies under `root` (no link to a file elsewhere)."""
    return path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(root.resolve())


def _images(folder: Path, suffixes: tuple[str, ...] = STILL_SUFFIXES) -> list[Path]:
    if not folder.is_dir():
        return []
    # Links are skipped: a page that embeds its pictures must not pull in files from elsewhere.
    return sorted((p for p in folder.iterdir() if _own_file(p, folder)
                   and p.suffix.lower() in suffixes and not p.name.startswith(".")), key=natural_key)


@dataclass
class Frame:
    """One position of a slider: a label and the pictures shown there."""

    label: str
    images: list[Path]


@dataclass
class Checkpoint:
    name: str
    step: int | None
    milestone: bool
    size: int  # bytes on disk, all files of the folder
    fid: float | None = None  # `best/` only
    readable: bool = True


@dataclass
class RunData:
    """What one run folder holds, read once."""

    path: Path
    name: str
    config: dict[str, Any]
    recipe: str
    recipe_defaults: dict[str, Any] | None
    recipe_source: str
    summary: dict[str, Any] | None
    summary_current: bool  # False: an older segment's summary (or none) while training goes on
    status: str  # running | finished | stopped | diverged (or what summary.json says)
    task: str  # gan | detect
    train: list[dict]
    evals: list[dict]
    events: list[dict]
    warnings: list[dict]
    samples: list[Frame]
    gifs: list[Path]
    predictions: list[Frame]
    prediction_gifs: list[Path]
    explore: list[Path]
    eval_json: dict[str, Any] | None
    checkpoints: list[Checkpoint]
    notes: list[str] = field(default_factory=list)  # files that could not be read
    explore_record: dict[str, Any] | None = None  # explore/explore.json: each picture's checkpoint step

    @property
    def steps(self) -> int:
        """The last step the run has recorded anywhere."""
        seen = [r.get("step", 0) for r in self.train + self.evals + self.events + self.warnings]
        if self.summary_current and self.summary:
            seen.append(self.summary.get("steps") or 0)
        return int(max(seen, default=0))

    def changed_fields(self) -> dict[str, tuple[Any, Any]]:
        """Config fields whose value differs from the recipe's default: {key: (value, default)}."""
        if self.recipe_defaults is None:
            return {}
        return {k: (v, self.recipe_defaults.get(k)) for k, v in self.config.items()
                if k in self.recipe_defaults and self.recipe_defaults[k] != v}


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return loads_json(path.read_bytes(), path.name)  # depth-checked: a run folder may come from anyone
    except FileNotFoundError:
        return None
    except (OSError, DataError) as err:
        why = type(err).__name__ if isinstance(err, OSError) else "damaged JSON"
        notes.append(f"{path.name} could not be read ({why}); it is left out")
        return None


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _checkpoints(root: Path, notes: list[str]) -> list[Checkpoint]:
    out: list[Checkpoint] = []
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir(), key=natural_key):
        if not folder.is_dir() or folder.name.startswith("."):
            continue  # hidden folders are checkpoints being written or pruned
        manifest = _read_json(folder / "MANIFEST.json", notes)
        if not isinstance(manifest, dict):
            if folder.name.startswith("step-") or folder.name == "best":
                out.append(Checkpoint(folder.name, None, False, _folder_size(folder), readable=False))
            continue
        fid = None
        if folder.name == "best":
            meta = _read_json(folder / "meta.json", notes)
            meta = meta.get("meta", {}) if isinstance(meta, dict) else {}
            fid = meta.get("fid") if isinstance(meta.get("fid"), (int, float)) else None
        step = manifest.get("step")
        out.append(Checkpoint(folder.name, step if isinstance(step, int) else None,
                              bool(manifest.get("milestone")), _folder_size(folder), fid))
    return out


def _frames(folder: Path) -> list[Frame]:
    """Grids straight in `folder` (one per frame), or one sub-folder of pictures per frame."""
    frames = [Frame(p.stem, [p]) for p in _images(folder)]
    subs = sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=natural_key) if folder.is_dir() else []
    frames += [Frame(d.name, pics) for d in subs if (pics := _images(d))]
    return frames


def _status(summary: dict | None, current: bool, live: bool, rows: list[dict]) -> str:
    if live:
        return "running"
    if summary and isinstance(summary.get("status"), str):
        return summary["status"]
    if summary and current:
        done = summary.get("finished") and (summary.get("steps") or 0) >= (summary.get("total_steps") or 0)
        return "finished" if done else "stopped"
    # No summary for this segment: a run that ended on non-finite steps never writes one.
    if rows and rows[-1].get("kind") == "event" and rows[-1].get("event") in (
            "skipped_nonfinite_step", "diverged"):
        return "diverged"
    return "running"


def load_run(path: Path, live: bool = False) -> RunData:
    """Read run folder `path`; raises GanforgeError when it is not a run or has nothing to show."""
    path = Path(path)
    if not path.is_dir():
        raise GanforgeError(f"{path} is not a folder: give a run folder that `ganforge train` wrote")
    notes: list[str] = []
    config = _read_json(path / "config.json", notes)
    if not isinstance(config, dict):
        what = "an unreadable" if (path / "config.json").exists() else "no"
        raise GanforgeError(f"{path} is not a run folder ({what} config.json): give a folder that "
                            "`ganforge train` wrote")
    rows = read_metrics(path / "metrics.jsonl")
    summary = _read_json(path / "summary.json", notes)
    summary = summary if isinstance(summary, dict) else None
    last_step = max((r.get("step", 0) for r in rows), default=0)
    current = summary is not None and (summary.get("steps") or 0) >= last_step
    recipe = str(config.get("recipe", ""))
    kinds = {k: [r for r in rows if r["kind"] == k] for k in ("train", "eval", "event", "warning")}
    evals = kinds["eval"]
    task = (summary or {}).get("task") or config.get("task") or (
        "detect" if any("map" in r for r in evals) else "gan")
    defaults, source = recipe_reference(recipe, str(task))
    eval_json = _read_json(path / "eval.json", notes)
    samples = _frames(path / "samples")
    predictions = _frames(path / "predictions")
    if not samples and not predictions:
        raise GanforgeError(f"{path} has no sample grids yet (samples/ is empty): wait for the first "
                            "snapshot of the run, then write the report again")
    gif_names = ["progress.gif"] + ([config["gif_name"]] if config.get("gif_name") else [])
    explore_dir = path / "explore"
    # `ganforge explore` keeps each walk's frames in a subfolder beside its GIF and still: show those two.
    explore = sorted((p for p in explore_dir.glob("*") if _own_file(p, path)
                      and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
                     key=lambda p: natural_key(p.relative_to(explore_dir))) if explore_dir.is_dir() else []
    return RunData(
        path=path, name=path.resolve().name, config=config, recipe=recipe, recipe_defaults=defaults,
        recipe_source=source, summary=summary, summary_current=current,
        status=_status(summary, current, live, rows), task=str(task),
        train=kinds["train"], evals=evals, events=kinds["event"], warnings=kinds["warning"],
        samples=samples, gifs=[path / n for n in dict.fromkeys(gif_names) if _own_file(path / n, path)],
        predictions=predictions,
        prediction_gifs=[p for p in [path / "predictions.gif", path / "predictions" / "predictions.gif"]
                         if _own_file(p, path)],
        explore=explore, eval_json=eval_json if isinstance(eval_json, dict) else None,
        checkpoints=_checkpoints(path / "checkpoints", notes), notes=notes,
        explore_record=_explore_record(explore_dir, notes),
    )


def _explore_record(folder: Path, notes: list[str]) -> dict[str, Any] | None:
    record = _read_json(folder / "explore.json", notes) if folder.is_dir() else None
    return record if isinstance(record, dict) and isinstance(record.get("pictures"), dict) else None
