"""segments: private-domain CRM segmentation — OneID, weekly tags, clusters and audience packs.

>>> import segments as sg                       # doctest: +SKIP
>>> ws = sg.open_workspace("workspace/")        # doctest: +SKIP
>>> ws.tags().select("one_id", "is_high_value").collect()   # doctest: +SKIP
"""

import os

# Let polars' allocator hand freed memory back at once: identity resolution at tens of
# millions of identifiers peaks about 15% lower (set before polars is first imported).
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

from segments.workspace import Workspace, open_workspace

__version__ = "0.1.0"

__all__ = ["Workspace", "__version__", "open_workspace"]
