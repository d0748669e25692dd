"""Self-contained HTML reports: side-by-side generations, metric tables, embedded plots."""

from __future__ import annotations

from skillgraft.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
