"""The curves of one run or several, as plain data for the page's charts, plus a sentence each.

A chart is a dict the page script hands to uPlot: one x axis (step), series of values (None where a
series has no point at that step), the events to mark, and a text summary so that the numbers are
also real text (for screen readers, print and search).
"""

from __future__ import annotations

import math
import re
from typing import Any

from .collect import RunData

# Colour-blind-safe palette (Okabe & Ito); runs take colours in this order when overlaid.
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442"]
DASHES = [[], [6, 3], [2, 3], [8, 3, 2, 3]]


def _charts(runs: list[RunData]) -> list:
    """The charts the runs' tasks ask for, each once, in the order they are first asked for."""
    seen: dict[str, object] = {}
    for run in runs:
        for chart in run.spec.charts:
            seen.setdefault(chart.id, chart)
    return list(seen.values())


MARKERS = {  # type: (label, colour, dash) as drawn on every chart and listed in its key
    "resume": ("resumed", "#009e73", [4, 3]),
    "rollback": ("rolled back", "#e69f00", [4, 3]),
    "skipped": ("skipped step", "#d55e00", [1, 2]),
    "collapse": ("collapse alarm", "#cc0000", []),
    "warning": ("warning", "#7a7a7a", [1, 3]),
    "event": ("event", "#56b4e9", [2, 2]),
}
_COLLAPSE = re.compile(r"collapse|D accuracy has been 100%", re.IGNORECASE)


def label(key: str, labels: dict[str, str] | None = None) -> str:
    return (labels or {}).get(key, key.replace("_", " "))


def markers(run: RunData) -> list[dict]:
    """The events and warnings of a run as chart markers: step, type (see MARKERS) and text."""
    out = []
    for row in run.events:
        name = str(row.get("event", "event"))
        kind = {"resumed": "resume", "rolled_back": "rollback",
                "skipped_nonfinite_step": "skipped"}.get(name, "event")
        out.append({"step": row.get("step", 0), "type": kind, "text": name.replace("_", " ")})
    for row in run.warnings:
        text = str(row.get("warning", ""))
        alarm = row.get("alarm") or row.get("key") in ("diversity", "d_acc") or _COLLAPSE.search(text)
        out.append({"step": row.get("step", 0), "type": "collapse" if alarm else "warning", "text": text})
    return sorted(out, key=lambda m: m["step"])


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _keys(rows: list[dict], keys: tuple[str, ...] | str) -> list[str]:
    if isinstance(keys, str):  # every numeric key that contains it
        seen = dict.fromkeys(k for r in rows for k, v in r.items() if keys in k and _numeric(v) is not None)
        return list(seen)
    return [k for k in keys if any(_numeric(r.get(k)) is not None for r in rows)]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def describe(name: str, steps: list[int], values: list[float | None]) -> str:
    """One sentence on a series: first and last value and its range."""
    points = [(s, v) for s, v in zip(steps, values) if v is not None]
    if not points:
        return ""
    (s0, v0), (s1, v1) = points[0], points[-1]
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    if len(points) == 1:
        return f"{name}: {_fmt(v0)} at step {s0}."
    return (f"{name}: {_fmt(v0)} at step {s0}, {_fmt(v1)} at step {s1} "
            f"(lowest {_fmt(lo)}, highest {_fmt(hi)}; {len(points)} points).")


def build_charts(runs: list[RunData]) -> list[dict]:
    """The charts with data for these runs: one run's series in their own colours, or each run in a
    colour of its own (and each quantity in a dash of its own) when several are overlaid."""
    charts = []
    several = len(runs) > 1
    labels = {k: v for run in runs for k, v in run.spec.labels.items()}
    for spec in _charts(runs):
        chart_id, title, source, keys, yrange, note = spec.id, spec.title, spec.source, spec.keys, spec.range, spec.note
        per_run = []
        for run in runs:
            rows = [r for r in (run.train if source == "train" else run.evals) if "step" in r]
            if ks := _keys(rows, keys):
                rows = [r for r in rows if any(_numeric(r.get(k)) is not None for k in ks)]
                per_run.append((run, rows, ks))
        if not per_run:
            continue
        steps = sorted({int(r["step"]) for _, rows, _ in per_run for r in rows})
        index = {s: i for i, s in enumerate(steps)}
        series, text = [], []
        for r_i, (run, rows, ks) in enumerate(per_run):
            for k_i, key in enumerate(ks):
                values: list[float | None] = [None] * len(steps)
                for row in rows:
                    if (v := _numeric(row.get(key))) is not None:
                        values[index[int(row["step"])]] = v
                name = f"{run.name} · {label(key, labels)}" if several else label(key, labels)
                colour = PALETTE[(r_i if several else k_i) % len(PALETTE)]
                dash = DASHES[k_i % len(DASHES)] if several else []
                series.append({"label": name, "values": values, "color": colour, "dash": dash,
                               "run": run.name, "key": key})
                text.append(describe(name, steps, values))
        many = max(sum(v is not None for v in s["values"]) for s in series)
        charts.append({
            "id": chart_id, "title": title, "x": steps, "series": series,
            "range": list(yrange) if yrange else None, "points": many < 12,
            "markers": [dict(m, run=run.name) for run, _, _ in per_run for m in markers(run)],
            "summary": [t for t in text if t], "note": note,
        })
    return charts


def marker_legend(charts: list[dict]) -> list[dict]:
    """The marker types that occur, with how often, for the key under the charts."""
    counts: dict[str, int] = {}
    for m in (charts[0]["markers"] if charts else []):
        counts[m["type"]] = counts.get(m["type"], 0) + 1
    return [{"type": t, "label": MARKERS[t][0], "color": MARKERS[t][1], "count": counts[t]}
            for t in MARKERS if t in counts]
