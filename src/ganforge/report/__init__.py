"""The run report: one self-contained HTML page that shows a run (or compares several).

`write_report([run_dir])` writes ``report.html`` into the run folder; the page points at the run's
pictures beside it and reloads itself while the run is live. Written anywhere else, or for several
runs, the page carries its pictures inside. Nothing on it comes from the network: the chart library
(uPlot), the script and the styles are inlined from ``ganforge/report_assets``.
"""

from __future__ import annotations

from .cli import add_report_parser, write_report, write_run_report

__all__ = ["add_report_parser", "write_report", "write_run_report"]
