"""Audience packs: definitions, safe SQL filters, suppression, holdouts, lookalikes and export.

A pack is a rule over the week's tag table (`OUT/weeks/<WEEK>/tags.parquet`, one row per
one_id), defined in `configs/audiences.toml` as `[packs.NAME]`:

```toml
[packs.high_value]
description = "High value as the business defines it"
where = "is_high_value"          # an SQL boolean expression over tag columns
include = []                      # union with other packs' rules
exclude = ["coupon_hunters"]      # people matching these packs' rules are removed
suppress_coupon_hunters = true    # default
suppress_recent_buyers_days = 14  # drop people with recency_days <= 14
order_by = "predicted_value_52w"  # with `descending = true` (default), then `limit`
holdout = 0.1                     # share held out (0 to 0.5), deterministic per person
min_size = 1000                   # refuse to export fewer people (platform floors also apply)
max_size = 2000000                # refuse to export more people
platforms = ["tencent", "alimama"]
```

Selection, in order (`Selection.counts` holds the number of people left after each step):
`matched` (where ∪ include) → `after_opted_out` (ALWAYS: people with `is_opted_out` true or
unknown are dropped; no config turns this off) → `after_coupon_hunters` →
`after_recent_buyers` → `after_exclude` → `after_limit` (order_by, limit) → `holdout` (how
many were held out) → `final`.

Filters are parsed by Polars SQL (`pl.sql_expr`), never evaluated as Python: a filter must be
one boolean expression naming tag columns only; statements, subqueries and unknown functions
are refused with a ConfigError naming the pack. A column named like an SQL keyword is quoted:
`"cluster" = 3`.

API: `load_audiences`, `select_pack`, `select_lookalike`, `preview`, `pack_members`,
`export_pack` (and `export_pack_all`, one selection for several platforms), `preview_pack`.

Modules, each importing only those above it: `filters` (safe SQL filters), `definitions`
(packs, audiences files, rule text), `select` (rule expressions, holdouts, selection,
lookalikes), `export` (members, the week's tags, export and its log), `preview` (previews,
listings).
"""

from __future__ import annotations

from segments.audiences.definitions import (
    DEFAULT_MIN_SIZE,
    Lookalike,
    PackDef,
    audiences_from_dict,
    definition,
    definition_hash,
    load_audiences,
    lookalike_pack,
    reference_problems,
    resolve_pack,
    rule_text,
)
from segments.audiences.export import (
    PHONE_HASHES,
    ExportPlan,
    WeekTags,
    append_log,
    check_platforms,
    export_pack,
    export_pack_all,
    export_plan,
    pack_members,
    plan_export,
    plan_from_tags,
    platform_hash_columns,
    read_log,
    scan_tags,
    week_tags,
)
from segments.audiences.filters import (
    MAX_FILTER_CHARS,
    FilterError,
    check_filter,
    compile_filter,
)
from segments.audiences.preview import (
    adhoc_pack,
    pack_summaries,
    preview,
    preview_pack,
)
from segments.audiences.select import (
    COUNT_KEYS,
    Selection,
    base_expr,
    excluded_expr,
    first_rows,
    holdout_score,
    interest_columns,
    is_held_out,
    rule_expr,
    select_lookalike,
    select_pack,
)

__all__ = [
    "COUNT_KEYS",
    "DEFAULT_MIN_SIZE",
    "MAX_FILTER_CHARS",
    "PHONE_HASHES",
    "ExportPlan",
    "FilterError",
    "Lookalike",
    "PackDef",
    "Selection",
    "WeekTags",
    "adhoc_pack",
    "append_log",
    "audiences_from_dict",
    "base_expr",
    "check_filter",
    "check_platforms",
    "compile_filter",
    "definition",
    "definition_hash",
    "excluded_expr",
    "export_pack",
    "export_pack_all",
    "export_plan",
    "first_rows",
    "holdout_score",
    "interest_columns",
    "is_held_out",
    "load_audiences",
    "lookalike_pack",
    "pack_members",
    "pack_summaries",
    "plan_export",
    "plan_from_tags",
    "platform_hash_columns",
    "preview",
    "preview_pack",
    "read_log",
    "reference_problems",
    "resolve_pack",
    "rule_expr",
    "rule_text",
    "scan_tags",
    "select_lookalike",
    "select_pack",
    "week_tags",
]
