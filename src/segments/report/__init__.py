"""The analysts' report: one self-contained, offline HTML page of a workspace's week (aggregates only).

```
>>> from segments.report import build_report                    # doctest: +SKIP
>>> build_report("out", week=None, to="report.html")            # doctest: +SKIP
PosixPath('report.html')
```

Sections: key figures, the OneID linkage funnel, RFM segment sizes and their week-over-week
movement, the interest graph, cluster profiles, the coupon-hunter trend and audience pack
sizes. The page embeds plotly.js once (no CDN, no network) and holds no timestamp of its own,
so the same workspace gives a byte-identical file. It holds only counts: no phone, no
identifier, no one_id.
"""

from __future__ import annotations

from segments.report.collect import ReportData, collect_report, linkage_funnel
from segments.report.render import SECTIONS, build_report, render_report

__all__ = [
    "SECTIONS",
    "ReportData",
    "build_report",
    "collect_report",
    "linkage_funnel",
    "render_report",
]
