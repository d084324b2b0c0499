"""The page: one run's sections, or several runs compared, around the inlined script and styles."""

from __future__ import annotations

import json
import time
from importlib import resources

from .. import __version__
from .charts import MARKERS, build_charts, marker_legend, markers
from .collect import Frame, RunData
from .media import Media, frame_label, image_size, uniform_grey
from .tables import (bars, checkpoints_table, compare_table, config_table, definitions, duration,
                     eval_json_block, eval_rows_table, eval_step, events_table, h, num, settings_diff,
                     step_note, value_html)

REFRESH_SECONDS = 20  # a live page reloads this often; snapshots come every few seconds to minutes


def _asset(name: str) -> str:
    return resources.files("ganforge").joinpath("report_assets", name).read_text(encoding="utf-8")


class Page:
    """Collects the sliders' frames and the charts while sections are written, for the script."""

    def __init__(self, media: Media) -> None:
        self.media = media
        self.sliders: dict[str, list[dict]] = {}
        self.charts: list[dict] = []

    def slider(self, key: str, frames: list[Frame], what: str, template: str = "") -> str:
        """A picture with a range input that scrubs through `frames`; the last one is shown first,
        so the page without its script (and in print) shows where training got to."""
        shown, total = self.media.frames(frames)
        data = []
        for i, f in enumerate(shown):
            text = frame_label(f, template)
            data.append({"label": f"{text} ({i + 1} of {len(shown)})",
                         "images": [{"src": self.media.src(p), "alt": f"{what}, {text} ({p.name})",
                                     "size": image_size(p)} for p in f.images]})
        self.sliders[key] = data
        last = data[-1]
        imgs = "".join(_img(x) for x in last["images"])
        spread = (f'<p class="note">{len(shown)} of {total} grids, evenly spread, are inside this page.</p>'
                  if len(shown) < total else "")
        return (f'<figure class="slider" data-slider="{key}"><div class="frame" id="{key}-frame">{imgs}</div>'
                f'<figcaption id="{key}-cap" aria-live="polite">{h(last["label"])}</figcaption>'
                f'<div class="controls"><button type="button" data-move="-1" aria-label="earlier">&#9664;</button>'
                f'<input type="range" id="{key}-range" min="0" max="{len(data) - 1}" value="{len(data) - 1}" '
                f'step="1" aria-label="{h(what)}: position in training"><button type="button" '
                f'data-move="1" aria-label="later">&#9654;</button></div></figure>{spread}')


def _img(x: dict, cls: str = "grid") -> str:
    wh = f' width="{x["size"][0]}" height="{x["size"][1]}"' if x.get("size") else ""
    return f'<img class="{cls}" src="{h(x["src"])}" alt="{h(x["alt"])}"{wh}>'


def _section(sid: str, title: str, body: str, level: int = 2) -> str:
    if not body:
        return ""  # sections without data are left out, not shown empty
    return f'<section id="{sid}" aria-labelledby="{sid}-h"><h{level} id="{sid}-h">{h(title)}</h{level}>{body}</section>'


def facts(run: RunData) -> list[tuple[str, str]]:
    """The header: what ran, on what, how far, how fast, and with which ganforge."""
    s = run.summary if run.summary_current and run.summary else {}
    last = run.train[-1] if run.train else {}
    cfg = run.config
    total = s.get("total_steps") or cfg.get("steps")
    steps = f"{run.steps:,}" + (f" of {total:,}" if isinstance(total, int) else
                                f" (budget {cfg['epochs']} epochs)" if cfg.get("epochs") else "")
    epochs = s.get("epochs", last.get("epoch"))
    speed = s.get("speed") if s else None
    features = ", ".join(speed.split("+")) if isinstance(speed, str) and speed else (
        "none" if s else f"preset {cfg.get('speed', 'auto')} (known at the end)")
    data = h(s.get("data") or cfg.get("data"))
    if s.get("data_source"):
        data += f' <span class="sub">{h(s["data_source"])}</span>'
    recipe = f"<code>{h(run.recipe)}</code>" + (f' <span class="sub">{h(run.recipe_source)}</span>'
                                                 if run.recipe_source else "")
    out = [("recipe", recipe), ("data", data),
           ("status", f'<span class="status status-{h(run.status)}">{h(run.status)}</span>'),
           ("steps", h(steps)), ("epochs", h(num(epochs))),
           ("images seen", h(num(s.get("images_seen", last.get("images_seen"))))),
           ("wall time", h(duration(s.get("seconds", last.get("seconds"))))),
           ("images/s", h(_rate(s.get("images_per_second", last.get("images_per_second"))))),
           ("device", h(s.get("device") or cfg.get("device", "—"))), ("speed features", h(features)),
           ("ganforge", h(s.get("ganforge_version") or f"{__version__} (this report)"))]
    if s.get("best_fid") is not None:
        out.append(("best FID", h(num(s["best_fid"]))))
    if s.get("skipped_steps"):
        out.append(("skipped steps", h(num(s["skipped_steps"]))))
    return out


def _rate(value) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) and value >= 100 else num(value, 3)


def _media_sections(page: Page, run: RunData, key: str, level: int) -> str:
    out = []
    if run.samples:
        body = page.slider(f"{key}-samples", run.samples, "fixed-latent sample grid",
                           str(run.config.get("sample_name", "")))
        body = f'<div class="media-row">{body}{_gifs(page, run.gifs, "the sample grids as an animation")}</div>'
        body += _grey_note(run)
        out.append(_section(f"{key}-samples-s", "Samples over time", body, level))
    if run.predictions:
        from ganforge.detect.infer import DRAW_CONF

        body = page.slider(f"{key}-pred", run.predictions, "validation images with predicted boxes")
        body = (f'<div class="media-row">{body}'
                f'{_gifs(page, run.prediction_gifs, "the predictions over training as an animation")}</div>')
        # A young model's boxes mostly score under the drawing threshold: say so, or the frames look broken.
        body += (f'<p class="note">Only boxes scoring over {DRAW_CONF:g} are drawn, so early frames can look '
                 "empty while the model is still learning; the mAP curve scores every box.</p>")
        out.append(_section(f"{key}-pred-s", "Predictions over time", body, level))
    return "".join(out)


def _grey_note(run: RunData) -> str:
    """Why the first grids are flat grey, when they are: a reader otherwise takes it for a bug."""
    grey = 0
    for frame in run.samples[:40]:
        if not all(uniform_grey(p) for p in frame.images):
            break
        grey += 1
    if not grey:
        return ""
    which = "The first grid is" if grey == 1 else f"The first {grey} grids are"
    return (f'<p class="note">{which} uniform grey. That is expected early on: grids are drawn with G in '
            "inference mode, where BatchNorm uses its running statistics, and those start at mean 0 and "
            "variance 1 and take some hundred steps to follow the real activations.</p>")


def _gifs(page: Page, gifs, what: str) -> str:
    out = []
    for gif in gifs:
        if page.media.fits(gif):
            out.append(f'<figure class="gif">{_img({"src": page.media.src(gif), "alt": f"{gif.name}: {what}"})}'
                       f"<figcaption>{h(gif.name)}</figcaption></figure>")
        else:
            out.append(f'<p class="note">{h(gif.name)} is too large to carry inside this page: open it in '
                       "the run folder.</p>")
    return f'<div class="gifs">{"".join(out)}</div>' if out else ""


def _charts_html(page: Page, charts: list[dict], key: str) -> str:
    if not charts:
        return ""
    blocks = []
    for c in charts:
        c = dict(c, id=f"{key}-{c['id']}")
        page.charts.append(c)
        summary = "".join(f"<li>{h(t)}</li>" for t in c["summary"])
        note = f'<p class="note">{h(c["note"])}</p>' if c["note"] else ""
        blocks.append(f'<figure class="chart-box"><figcaption><strong>{h(c["title"])}</strong></figcaption>'
                      f'<div class="chart" id="chart-{c["id"]}" role="img" aria-label="{h(c["title"])} '
                      f'against step"></div><p class="at-cursor" id="chart-{c["id"]}-at"></p>{note}'
                      f'<details class="values"><summary>In words</summary><ul>{summary}</ul></details></figure>')
    legend = "".join(f'<li><span class="swatch" style="border-color:{m["color"]}"></span>{h(m["label"])} '
                     f'({m["count"]:,})</li>' for m in marker_legend(charts))
    key_html = f'<ul class="marker-key" aria-label="markers on the curves">{legend}</ul>' if legend else ""
    return (f'<p class="hint">Hover or touch a chart for the values at a step; the vertical lines mark '
            f'events.</p>{key_html}<div class="charts">{"".join(blocks)}</div>')


def _detection(run: RunData) -> str:
    row = next((r for r in reversed(run.evals) if isinstance(r.get("ap"), dict)), None)
    ap = row["ap"] if row else None
    src = f"last evaluation during training, {step_note(row.get('step'), run)}" if row else ""
    if isinstance((run.eval_json or {}).get("ap"), dict):
        ap, src = run.eval_json["ap"], f"eval.json, {step_note(eval_step(run), run)}"
    return bars(ap, f"Average precision per class ({src})", top=1.0) if ap else ""


def _explore(page: Page, run: RunData) -> str:
    figs = []
    for p in run.explore:
        name = p.relative_to(run.path / "explore").as_posix()
        what = "animation" if p.suffix.lower() == ".gif" else "picture"
        if p.suffix.lower() == ".gif" and not page.media.fits(p):
            continue
        entry = ((run.explore_record or {}).get("pictures") or {}).get(p.stem)
        step = entry.get("checkpoint_step") if isinstance(entry, dict) else None
        when = step_note(step if isinstance(step, int) else None, run)
        alt = f"explore {what}: {p.stem.replace('_', ' ').replace('-', ' ')}, {when}"
        x = {"src": page.media.src(p), "alt": alt, "size": image_size(p)}
        figs.append(f'<figure>{_img(x, "explore")}<figcaption>{h(name)}, {h(when)}</figcaption></figure>')
    fidelity = (run.eval_json or {}).get("class_fidelity")
    body = f'<div class="gallery">{"".join(figs)}</div>' if figs else ""
    if fidelity is not None:
        body += (f"<h3>Class fidelity (eval.json, {h(step_note(eval_step(run), run))})</h3>"
                 f"{value_html(fidelity, 'class fidelity per class')}")
    return body


def run_sections(page: Page, run: RunData, key: str, level: int, with_charts: bool) -> str:
    """Every section one run has data for (the header comes first, then pictures, curves, tables)."""
    sub = level + 1
    notes = "".join(f'<li>{h(n)}</li>' for n in run.notes)
    out = [definitions(facts(run)), f'<ul class="notes">{notes}</ul>' if notes else ""]
    out.append(_media_sections(page, run, key, level))
    if with_charts:
        out.append(_section(f"{key}-curves", "Curves", _charts_html(page, build_charts([run]), key), level))
    out.append(_section(f"{key}-ap", "Detection: average precision", _detection(run), level))
    evals = eval_rows_table(run) + eval_json_block(run).replace("<h3>", f"<h{sub}>").replace("</h3>", f"</h{sub}>")
    out.append(_section(f"{key}-eval", "Evaluation", evals, level))
    out.append(_section(f"{key}-explore", "Explore: classes, interpolations and codes", _explore(page, run), level))
    names = {k: v[0] for k, v in MARKERS.items()}
    out.append(_section(f"{key}-events", "Events and warnings", events_table(run, markers(run), names), level))
    out.append(_section(f"{key}-ckpt", "Checkpoints", checkpoints_table(run), level))
    out.append(_section(f"{key}-config", "Config", config_table(run), level))
    return "".join(out)


def _nav(sections: list[tuple[str, str]]) -> str:
    links = "".join(f'<li><a href="#{sid}">{h(t)}</a></li>' for sid, t in sections)
    return f'<nav aria-label="sections"><ul>{links}</ul></nav>'


def _found(body: str, ids: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(sid, t) for sid, t in ids if f'id="{sid}"' in body]


def single_page(run: RunData, media: Media, live: bool, served: str | None = None) -> str:
    page = Page(media)
    body = run_sections(page, run, "r0", 2, with_charts=True)
    nav = _nav(_found(body, [("r0-samples-s", "Samples"), ("r0-pred-s", "Predictions"), ("r0-curves", "Curves"),
                             ("r0-ap", "AP per class"), ("r0-eval", "Evaluation"), ("r0-explore", "Explore"),
                             ("r0-events", "Events"), ("r0-ckpt", "Checkpoints"), ("r0-config", "Config")]))
    title = f"{run.name}: {run.recipe} ({run.status})"
    return _document(title, f"<header><h1>{h(run.name)}</h1><p class=\"lede\">{h(run.task.upper())} run "
                            f"of recipe <code>{h(run.recipe)}</code></p></header>{nav}<main>{body}</main>",
                     page, live, served)


def compare_page(runs: list[RunData], media: Media, live: bool) -> str:
    page = Page(media)
    finals = []
    for i, run in enumerate(runs):
        frames = run.samples or run.predictions
        last = frames[-1]
        label = frame_label(last, str(run.config.get("sample_name", ""))) if run.samples else last.label
        imgs = "".join(_img({"src": media.src(p), "alt": f"final grid of {run.name}, {label}",
                             "size": image_size(p)}) for p in last.images)
        finals.append(f'<figure>{imgs}<figcaption><a href="#run-{i}">{h(run.name)}</a>, {h(label)}'
                      f"</figcaption></figure>")
    parts = [_section("runs", "The runs", compare_table(runs, facts) + settings_diff(runs)),
             _section("finals", "Final grids side by side", f'<div class="finals">{"".join(finals)}</div>'),
             _section("curves", "Curves, overlaid", _charts_html(page, build_charts(runs), "cmp"))]
    for i, run in enumerate(runs):
        inner = run_sections(page, run, f"r{i}", 3, with_charts=False)
        parts.append(f'<section id="run-{i}" class="run" aria-labelledby="run-{i}-h"><h2 id="run-{i}-h">'
                     f"{h(run.name)}</h2>{inner}</section>")
    body = "".join(parts)
    nav = _nav(_found(body, [("runs", "Runs"), ("finals", "Final grids"), ("curves", "Curves")])
               + [(f"run-{i}", r.name) for i, r in enumerate(runs)])
    names = ", ".join(r.name for r in runs)
    return _document(f"Comparing {names}", f"<header><h1>Comparing {len(runs)} runs</h1><p class=\"lede\">"
                                           f"{h(names)}</p></header>{nav}<main>{body}</main>", page, live)


def _document(title: str, body: str, page: Page, live: bool, served: str | None = None) -> str:
    payload = {"live": live, "refresh": REFRESH_SECONDS, "sliders": page.sliders, "charts": page.charts,
               "markers": {k: {"label": v[0], "color": v[1], "dash": v[2]} for k, v in MARKERS.items()}}
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\u0021--")
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    live_note = (f'<p class="live-note" role="status">This run is training: the page reloads every '
                 f"{REFRESH_SECONDS} s.</p>") if live else ""
    if served:  # `ganforge serve` is running this run's model: a link to its page (gone when it stops)
        live_note += (f'<p class="live-note served-note" role="status">Play with this model in the browser: '
                      f'<a href="{h(served)}">{h(served)}</a> (while <code>ganforge serve</code> runs).</p>')
    # uPlot (vendored, MIT) draws the curves: small, no dependencies, fast with long logs, and it
    # shows the values under the cursor; the page's own script and styles are beside it.
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><meta name="generator" content="ganforge '
            f'{h(__version__)}"><title>{h(title)}</title><style>{_asset("uPlot.min.css")}</style>'
            f'<style>{_asset("report.css")}</style></head><body>{live_note}{body}<footer><p>Written '
            f"{h(when)} by ganforge {h(__version__)}. Everything on this page is inside it or beside it in "
            f"the run folder; nothing is fetched from the network.</p></footer>"
            f'<script type="application/json" id="gf-data">{data}</script>'
            f'<script>{_asset("uPlot.iife.min.js")}</script><script>{_asset("report.js")}</script>'
            f"</body></html>\n")
