"""The report's tables (eval, config, checkpoints, events, comparison) and bar lists, as HTML."""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from .collect import RunData

MAX_EVENT_ROWS = 500  # a run that skipped thousands of steps still gets a readable table


def h(value: Any) -> str:
    return escape(str(value), quote=True)


def num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return "—" if value is None else str(value)


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def size(nbytes: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def table(head: list[str], rows: list[list[str]], caption: str = "", row_class: list[str] | None = None,
          cls: str = "") -> str:
    """A table whose cells are already HTML, scrollable sideways on a narrow screen."""
    cap = f"<caption>{caption}</caption>" if caption else ""
    ths = "".join(f'<th scope="col">{c}</th>' for c in head)
    body = []
    for i, row in enumerate(rows):
        klass = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        body.append(f"<tr{klass}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return (f'<div class="table-wrap"><table class="{cls}">{cap}<thead><tr>{ths}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def definitions(pairs: list[tuple[str, str]], cls: str = "facts") -> str:
    items = "".join(f"<div><dt>{h(k)}</dt><dd>{v}</dd></div>" for k, v in pairs)
    return f'<dl class="{cls}">{items}</dl>'


def bars(values: dict[str, Any], caption: str, top: float | None = None) -> str:
    """Horizontal bars with their numbers as text (per-class AP, class fidelity)."""
    nums = {str(k): float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if not nums:
        return ""
    scale = top if top is not None else max(max(nums.values()), 1e-12)
    rows = []
    for name, value in nums.items():
        width = max(0.0, min(100.0, 100.0 * value / scale))
        rows.append(f'<tr><th scope="row">{h(name)}</th><td class="bar-cell"><span class="bar" '
                    f'style="width:{width:.1f}%"></span></td><td class="num">{num(value, 3)}</td></tr>')
    return (f'<div class="table-wrap"><table class="bars"><caption>{h(caption)}</caption>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def value_html(value: Any, name: str = "") -> str:
    """Any JSON value readably: numbers per name in [0, 1] as bars, mappings as definitions."""
    if isinstance(value, dict):
        numeric = [v for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numeric) == len(value) >= 2:
            share = all(0.0 <= v <= 1.0 for v in numeric)
            return bars(value, name or "per class", top=1.0 if share else None)
        return definitions([(str(k), value_html(v, str(k))) for k, v in value.items()], cls="nested")
    if isinstance(value, list):
        return f"<pre>{h(json.dumps(value, indent=1)[:4000])}</pre>"
    return h(num(value))


def eval_rows_table(run: RunData) -> str:
    """The evaluations logged during training, one row per evaluation."""
    if not run.evals:
        return ""
    cols = [(k, t) for k, t in run.spec.eval_columns if any(k in r for r in run.evals)]
    rows = []
    for r in run.evals:
        cells = [num(r.get("step"))]
        for key, _ in cols:
            text = num(r.get(key))
            if key == "kid_mean" and isinstance(r.get("kid_std"), (int, float)):
                text += f" ± {num(r['kid_std'], 2)}"
            cells.append(h(text))
        rows.append(cells)
    protocol = run.spec.eval_protocol(run.config) if run.spec.eval_protocol else ""
    if any(r.get("metric") for r in run.evals):
        protocol = f"Metric: {h(next(r['metric'] for r in run.evals if r.get('metric')))}."
    return (table(["step"] + [t for _, t in cols], rows, caption="Evaluations during training", cls="nums")
            + f'<p class="protocol">{protocol}</p>')


def eval_step(run: RunData) -> int | None:
    """The checkpoint step `eval.json` scored (None when it does not say)."""
    protocol = (run.eval_json or {}).get("protocol")
    step = protocol.get("checkpoint_step") if isinstance(protocol, dict) else (run.eval_json or {}).get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def step_note(step: int | None, run: RunData) -> str:
    """Which step a picture or a number is from, and whether the run has trained past it since."""
    if step is None:
        return "step not recorded"
    if step < run.steps:
        return f"step {step:,}; stale: the run has trained to step {run.steps:,} since"
    return f"step {step:,}"


def eval_json_block(run: RunData) -> str:
    """`eval.json` from `ganforge eval`: its scores and the protocol they were measured with."""
    result = run.eval_json
    if not result:
        return ""
    skip = {"protocol", "class_fidelity", "ap", "infogan", "verdict"}
    scores = [(k, h(num(v))) for k, v in result.items() if k not in skip and not isinstance(v, (dict, list))]
    protocol = result.get("protocol") if isinstance(result.get("protocol"), dict) else {}
    step = eval_step(run)
    if step is None:
        title, lead = "Evaluation from eval.json (its step is not recorded)", ""
    elif step < run.steps:
        # An evaluation of an earlier checkpoint must not pass for the run's final figure.
        title = f"Evaluation at step {step:,} (eval.json): stale"
        lead = (f'<p class="stale">This evaluation scored the step-{step:,} checkpoint; the run has trained '
                f"to step {run.steps:,} since. Run <code>ganforge eval {h(run.name)}</code> again for the "
                "current one.</p>")
    else:
        which = "the finished run" if run.status == "finished" else "the run's latest checkpoint"
        title, lead = f"Evaluation of {which} at step {step:,} (eval.json)", ""
    notes = run.spec.eval_notes(result) if run.spec.eval_notes else ""
    out = [f"<h3>{h(title)}</h3>", lead, definitions(scores), notes]
    if protocol:
        out.append("<h4>Protocol</h4>" + definitions([(k, value_html(v, k)) for k, v in protocol.items()],
                                                     cls="facts protocol-list"))
    return "".join(out)


def config_table(run: RunData) -> str:
    changed = run.changed_fields()
    if run.recipe_defaults is None:
        lead = (f"<p>Recipe <code>{h(run.recipe)}</code> is not one this ganforge knows, so there are "
                "no defaults to compare with.</p>")
    elif changed:
        names = ", ".join(f"<code>{h(k)}</code>" for k in changed)
        lead = (f"<p>{len(changed)} field{'s' if len(changed) != 1 else ''} differ from recipe "
                f"<code>{h(run.recipe)}</code>: {names}. They are marked <mark>changed</mark>.</p>")
    else:
        lead = f"<p>Every field is the default of recipe <code>{h(run.recipe)}</code>.</p>"
    head = ["field", "value", "recipe default"]
    diff = table(head, [[f"<code>{h(k)}</code>", f"<code>{h(json.dumps(v))}</code>",
                         f"<code>{h(json.dumps(d))}</code>"] for k, (v, d) in changed.items()],
                 caption="Changed from the recipe", row_class=["changed"] * len(changed),
                 cls="config") if changed else ""
    rows, classes = [], []
    for key, value in run.config.items():
        is_changed = key in changed
        mark = ' <mark class="tag">changed</mark>' if is_changed else ""
        default = h(json.dumps(changed[key][1])) if is_changed else ""
        rows.append([f"<code>{h(key)}</code>{mark}", f"<code>{h(json.dumps(value))}</code>",
                     f"<code>{default}</code>" if default else ""])
        classes.append("changed" if is_changed else "")
    full = table(head, rows, row_class=classes, cls="config")
    return (f'{lead}{diff}<details class="full-config"><summary>The whole config ({len(rows)} '
            f"fields)</summary>{full}</details>")


def checkpoints_table(run: RunData) -> str:
    if not run.checkpoints:
        return ""
    rows = []
    for c in run.checkpoints:
        kind = ("best by FID" if c.name == "best" else "milestone" if c.milestone else "latest (rolling)")
        if not c.readable:
            kind = "unreadable manifest"
        rows.append([f"<code>{h(c.name)}</code>", h(num(c.step)), h(kind), h(size(c.size)),
                     h(num(c.fid)) if c.fid is not None else ""])
    return table(["folder", "step", "kind", "size", "FID"], rows, cls="nums")


def events_table(run: RunData, marker_rows: list[dict], labels: dict[str, str]) -> str:
    if not marker_rows:
        return ""
    shown = marker_rows[:MAX_EVENT_ROWS]
    rows = [[h(num(m["step"])), h(labels.get(m["type"], m["type"])), h(m["text"])] for m in shown]
    more = len(marker_rows) - len(shown)
    tail = f"<p>{more:,} more rows are in <code>metrics.jsonl</code>.</p>" if more > 0 else ""
    return table(["step", "kind", "what happened"], rows) + tail


def compare_table(runs: list[RunData], facts) -> str:
    """One row per run: the header facts side by side (a fact one run lacks is left blank)."""
    per_run = [dict(facts(r)) for r in runs]
    names = list(dict.fromkeys(k for f in per_run for k in f))
    rows = [[f'<a href="#run-{i}">{h(r.name)}</a>'] + [f.get(n, "") for n in names]
            for i, (r, f) in enumerate(zip(runs, per_run))]
    return table(["run"] + [h(n) for n in names], rows, cls="compare")


def settings_diff(runs: list[RunData]) -> str:
    """Config fields whose values differ between the runs, one column per run."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config))
    differ = [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1]
    if not differ:
        return "<p>The runs have the same config.</p>"
    rows = [[f"<code>{h(k)}</code>"] + [f"<code>{h(json.dumps(r.config.get(k)))}</code>" for r in runs]
            for k in differ]
    return table(["field"] + [h(r.name) for r in runs], rows,
                 caption="Settings that differ between the runs", cls="config")
