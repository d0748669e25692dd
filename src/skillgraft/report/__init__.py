"""Self-contained HTML reports: side-by-side generations, metric tables, embedded plots.

`from skillgraft.report import write_report` loads the renderer on first use, so the CLI
(`skillgraft --help`) starts without it.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("render_report", "write_report"):
        from skillgraft.report import html

        return getattr(html, name)
    raise AttributeError(f"module 'skillgraft.report' has no attribute {name!r}")
