"""The tag registry: every column of the weekly tag table, documented, in a fixed order.

The registry is the one source of truth for `tags.parquet`: `finalize` puts the table's
columns in registry order, fills what a missing row means (a person with no order has
`frequency_52w = 0`, not null), and refuses a table with an undocumented column or a missing
documented one. `tag_dictionary()` is the same registry as a table, written beside the tags.

The registry is data (`registry.toml`, read by `registry`): the interest tags come from the
taxonomy and the window tags from the RFM windows, so `registry(taxonomy)` holds a brand's own
interests; `REGISTRY` is the registry for the contract's default taxonomy.
"""

from segments.tags.registry import (
    BY_NAME,
    CONTRACT_COLUMNS,
    INTERESTS,
    REGISTRY,
    REGISTRY_VERSION,
    Tag,
    registry,
)
from segments.tags.table import finalize, registry_markdown, tag_dictionary

__all__ = [
    "BY_NAME",
    "CONTRACT_COLUMNS",
    "INTERESTS",
    "REGISTRY",
    "REGISTRY_VERSION",
    "Tag",
    "finalize",
    "registry",
    "registry_markdown",
    "tag_dictionary",
]
