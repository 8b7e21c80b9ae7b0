"""segments: private-domain CRM segmentation — OneID, weekly tags, clusters and audience packs.

>>> import segments as sg                       # doctest: +SKIP
>>> ws = sg.open_workspace("workspace/")        # doctest: +SKIP
>>> ws.tags().select("one_id", "is_high_value").collect()   # doctest: +SKIP
"""

import os

# polars' allocator keeps freed pages for half a second before handing them back (set before
# polars is first imported; a value already in the environment wins). Handing them back at
# once (dirty_decay_ms:0) lowered identity's peak by about 18%, but every stage then paid a
# page fault for each page it allocated again: the 100k-user demo week took 40.4 s at 1141 MiB
# peak, against 24.6 s at 1240 MiB with these settings (docs/scale.md).
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:500,muzzy_decay_ms:0")

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Workspace", "__version__", "open_workspace"]

if TYPE_CHECKING:
    from segments.workspace import Workspace, open_workspace


def __getattr__(name: str) -> Any:
    # The workspace API (polars and every stage) loads on first use, so that importing a light
    # module such as `segments.settings` does not load the engine.
    if name in ("Workspace", "open_workspace"):
        from segments import workspace

        return getattr(workspace, name)
    raise AttributeError(f"module 'segments' has no attribute {name!r}")
