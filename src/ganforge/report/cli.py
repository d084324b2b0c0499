"""`write_report` and the `ganforge report RUN [RUN ...] [--out FILE]` command."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..errors import GanforgeError
from ..io import atomic_write_text
from ..outputs import check_file, run_record, starts_with
from .collect import RunData, load_run
from .media import Media
from .render import compare_page, single_page

PAGE_NAME = "report.html"
COMPARE_NAME = "compare.html"  # several runs, no --out: in the current folder
_OURS = starts_with(b'<meta name="generator" content="ganforge')  # what render._document writes


def _distinct_names(runs: list[RunData]) -> None:
    """Runs named alike (`a/run`, `b/run`) are told apart by their parent folder on the page."""
    counts = Counter(r.name for r in runs)
    for r in runs:
        if counts[r.name] > 1:
            r.name = f"{r.path.resolve().parent.name}/{r.name}"


def write_report(run_dirs: list[Path], out: Path | None = None, live: bool = False, force: bool = False,
                 served: str | None = None) -> Path:
    """Write the report of `run_dirs` to `out` (default: ``RUN/report.html`` for one run,
    ``./compare.html`` for several) atomically, and return its path.

    live: the run is still training; the page says so and reloads itself (the trainer passes True
    at its snapshots and False once it is done). served: the address of `ganforge serve`'s page
    for this run, linked from the top of a single run's page while it is served. Raises
    GanforgeError for a folder that is not a run, a run with nothing to show yet, or an `out` that
    cannot be written: an entry of a run it reads (other than its own report.html), or a file that
    ganforge did not write (unless `force`)."""
    if not run_dirs:
        raise GanforgeError("no run folder given: name one or more folders that `ganforge train` wrote")
    single = len(run_dirs) == 1
    target = Path(out) if out is not None else (Path(run_dirs[0]) / PAGE_NAME if single else Path(COMPARE_NAME))
    if target.is_dir():
        target = target / (PAGE_NAME if single else COMPARE_NAME)
    inputs = [p for d in run_dirs for p in run_record(d, own=(PAGE_NAME,))]
    check_file(target, inputs=inputs, force=force, ours=_OURS)
    runs = [load_run(Path(d), live=live) for d in run_dirs]
    _distinct_names(runs)
    inside = single and target.parent.resolve() == runs[0].path.resolve()
    media = Media(runs[0].path, embed=not inside)
    page = single_page(runs[0], media, live, served) if single else compare_page(runs, media, live)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, page)
    except OSError as err:
        raise GanforgeError(f"cannot write the report to {target}: {err.strerror or err}: "
                            "choose a writable --out") from None
    return target


def write_run_report(run_dir: Path, live: bool, log=print) -> Path | None:
    """The trainer's call: the run's own report.html, written at each snapshot and at the end. A
    report that cannot be written is a warning, never the end of a training run."""
    try:
        return write_report([run_dir], live=live)
    except (GanforgeError, OSError) as err:
        log(f"warning: the run report was not written ({err})")
        return None


def cmd_report(args: argparse.Namespace) -> int:
    out = write_report([Path(r) for r in args.runs], Path(args.out) if args.out else None, force=args.force)
    print(f"wrote {out}")
    return 0


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Add `report RUN [RUN ...] [--out FILE]` to `subparsers`; the parsed args carry `func`."""
    p = subparsers.add_parser("report", help="write an HTML page of a run (or compare several runs)",
                              description="Write a self-contained HTML page of one run, or of several "
                                          "runs compared. Works offline.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) that `ganforge train` wrote")
    p.add_argument("--out", metavar="FILE", help=f"where to write the page (default RUN/{PAGE_NAME}; "
                                                 f"for several runs ./{COMPARE_NAME})")
    p.add_argument("--force", action="store_true", help="replace an existing --out file that ganforge did not write")
    p.set_defaults(func=cmd_report)
    return p
