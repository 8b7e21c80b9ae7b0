"""The analysts' view of a workspace: weeks, tags, identities, packs and diffs, for notebooks
and for the CLI (which calls these same functions).

>>> import segments as sg                                   # doctest: +SKIP
>>> ws = sg.open_workspace(".demo/out")                     # doctest: +SKIP
>>> ws.weeks[-1], ws.tags().select("is_high_value").collect().sum()   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from segments.errors import DataError
from segments.io import read_json
from segments.layout import Layout
from segments.tags import REGISTRY, Tag, registry
from segments.taxonomy import Taxonomy
from segments.weeks import Week


@dataclass(frozen=True)
class IdentityView:
    root: Path

    def map(self, week: str | None = None) -> pl.LazyFrame:
        layout = Layout(self.root)
        path = layout.one_id_map
        if week:
            path = layout.identity_history(Week.parse(week).label) / "one_id_map.parquet"
        if not path.is_file():
            raise DataError(f"{path}: not found; run `segments run` first.")
        return pl.scan_parquet(path, glob=False)

    def stats(self) -> dict:
        return read_json(Layout(self.root).identity_stats)

    def lookup(self, id_type: str, id: str) -> pl.DataFrame:
        """Every identifier of the person holding (id_type, id); a raw phone is hashed first."""
        from segments.identity import lookup

        return lookup(self.map().collect(), id_type, id)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def weeks(self) -> list[str]:
        return self.layout.built_weeks()

    def week(self, week: str | None = None) -> str:
        """The label of a built week (default: the latest); DataError when it is not built."""
        return self.layout.resolve_week(week)

    def tags_path(self, week: str | None = None) -> Path:
        return self.layout.tags(self.week(week))

    def tags(self, week: str | None = None) -> pl.LazyFrame:
        """The week's tag table (default: the latest week) as a LazyFrame."""
        return pl.scan_parquet(self.tags_path(week), glob=False)

    @property
    def identity(self) -> IdentityView:
        return IdentityView(self.root)

    def person(self, one_id: str, week: str | None = None) -> dict:
        rows = self.tags(week).filter(pl.col("one_id") == one_id).collect()
        if rows.height == 0:
            raise DataError(f"no person {one_id} in {self.week(week)}.")
        return rows.row(0, named=True)

    def diff(self, w1: str, w2: str) -> TagDiff:
        return diff_weeks(
            self.tags(w1).collect(), self.tags(w2).collect(), self.week(w1), self.week(w2)
        )

    def audience(self, name: str, week: str | None = None) -> AudienceView:
        """A pack of this workspace's week: `.preview()` and `.export(platform, to)`."""
        return AudienceView(self, name, self.week(week))


@dataclass(frozen=True)
class AudienceView:
    """One pack (a name from configs/audiences.toml, or `lookalike(base, size, method)`) in one
    week of a workspace; the CLI's `audience preview` and `audience export` call the same
    functions."""

    workspace: Workspace
    name: str
    week: str

    def preview(self) -> dict:
        """Counts before and after each suppression, and breakdowns by cluster, interest,
        lifecycle and source."""
        from segments.audiences import preview_pack

        return preview_pack(self.workspace.root, self.name, week=self.week)

    def export(self, platform: str, to: str | Path, options: dict | None = None):
        """Write the platform's files into `to`; returns the export manifest."""
        from segments.audiences import export_pack

        return export_pack(
            self.workspace.root, self.name, platform, to, week=self.week, options=options
        )


def open_workspace(path: str | Path) -> Workspace:
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such workspace folder.")
    return Workspace(root)


# ---------------------------------------------------------------------------------------------
# Tag descriptions


def describe_tag(name: str, taxonomy: Taxonomy | None = None) -> Tag:
    """The registry's entry for tag `name` (the interest tags of `taxonomy`, default: the
    contract's); DataError suggests close names when there is none."""
    tags = registry(taxonomy)
    by_name = {t.name: t for t in tags}
    if name not in by_name:
        close = [t.name for t in tags if name.lower() in t.name][:5]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DataError(f"no tag named '{name}'.{hint} `segments tags list` shows them all.")
    return by_name[name]


# ---------------------------------------------------------------------------------------------
# Week-over-week diffs


@dataclass
class TagDiff:
    w1: str
    w2: str
    shifts: pl.DataFrame  # tag, kind, psi_or_share_change, mean_1, mean_2
    flows: pl.DataFrame  # flag, entered, left, stayed
    movement: pl.DataFrame  # rfm_segment of w1 x rfm_segment of w2 counts

    def describe(self) -> str:
        lines = [f"tags {self.w1} -> {self.w2}", "", "people entering and leaving:"]
        for row in self.flows.iter_rows(named=True):
            lines.append(
                f"  {row['flag']:<32} +{row['entered']:<7,} -{row['left']:<7,} stayed {row['stayed']:,}"
            )
        lines += [
            "",
            "largest distribution shifts (PSI for numbers, total share change for categories):",
        ]
        for row in self.shifts.head(15).iter_rows(named=True):
            lines.append(f"  {row['tag']:<36} {row['kind']:<11} {row['shift']:.4f}")
        lines += ["", "RFM segment movement (rows: " + self.w1 + ", columns: " + self.w2 + "):"]
        with pl.Config(tbl_rows=20, tbl_cols=12, tbl_width_chars=200):
            lines.append(str(self.movement))
        return "\n".join(lines)


def psi(a: np.ndarray, b: np.ndarray, bins: int = 10) -> float:
    """Population stability index of b against a, on a's deciles (nulls as their own bin)."""
    a = a[~np.isnan(a)]
    b = b[~np.isnan(b)]
    if a.size == 0 or b.size == 0:
        return 0.0
    edges = np.unique(np.quantile(a, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    pa = np.histogram(a, edges)[0] / a.size
    pb = np.histogram(b, edges)[0] / b.size
    eps = 1e-6
    pa, pb = np.clip(pa, eps, None), np.clip(pb, eps, None)
    return float(np.sum((pb - pa) * np.log(pb / pa)))


def diff_weeks(t1: pl.DataFrame, t2: pl.DataFrame, w1: str, w2: str) -> TagDiff:
    rows = []
    for tag in REGISTRY:
        if tag.name == "one_id" or tag.name not in t1.columns or tag.name not in t2.columns:
            continue
        if tag.dtype in ("int", "float"):
            a = t1[tag.name].cast(pl.Float64).to_numpy()
            b = t2[tag.name].cast(pl.Float64).to_numpy()
            rows.append({"tag": tag.name, "kind": "numeric", "shift": psi(a, b)})
        elif tag.dtype in ("str", "bool"):
            s1 = (
                t1[tag.name]
                .cast(pl.String)
                .fill_null("<null>")
                .value_counts(normalize=True, name="p")
            )
            s2 = (
                t2[tag.name]
                .cast(pl.String)
                .fill_null("<null>")
                .value_counts(normalize=True, name="p")
            )
            j = s1.join(s2, on=tag.name, how="full", coalesce=True, suffix="_2").fill_null(0.0)
            rows.append(
                {
                    "tag": tag.name,
                    "kind": "categorical",
                    "shift": float((j["p"] - j["p_2"]).abs().sum() / 2),
                }
            )
    shifts = pl.DataFrame(
        rows, schema={"tag": pl.String, "kind": pl.String, "shift": pl.Float64}
    ).sort(["shift", "tag"], descending=[True, False])
    both = t1.select(
        "one_id",
        *[c for c in ("is_high_value", "is_coupon_hunter", "rfm_segment") if c in t1.columns],
    ).join(
        t2.select(
            "one_id",
            *[c for c in ("is_high_value", "is_coupon_hunter", "rfm_segment") if c in t2.columns],
        ),
        on="one_id",
        how="full",
        coalesce=True,
        suffix="_2",
    )
    flows = []
    for flag in ("is_high_value", "is_coupon_hunter"):
        x, y = both[flag].fill_null(False), both[f"{flag}_2"].fill_null(False)
        flows.append(
            {
                "flag": flag,
                "entered": int((~x & y).sum()),
                "left": int((x & ~y).sum()),
                "stayed": int((x & y).sum()),
            }
        )
    segs = sorted(set(both["rfm_segment"].drop_nulls()) | set(both["rfm_segment_2"].drop_nulls()))
    for seg in segs:
        x = both["rfm_segment"].eq_missing(seg)
        y = both["rfm_segment_2"].eq_missing(seg)
        flows.append(
            {
                "flag": f"rfm_segment={seg}",
                "entered": int((~x & y).sum()),
                "left": int((x & ~y).sum()),
                "stayed": int((x & y).sum()),
            }
        )
    movement = (
        both.with_columns(
            pl.col("rfm_segment").fill_null("(none)").alias("from"),
            pl.col("rfm_segment_2").fill_null("(none)").alias("to"),
        )
        .group_by("from", "to")
        .len()
        .sort("from", "to")
        .pivot(on="to", index="from", values="len")
        .fill_null(0)
    )
    return TagDiff(w1, w2, shifts, pl.DataFrame(flows), movement)
