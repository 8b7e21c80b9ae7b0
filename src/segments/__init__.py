"""segments: private-domain CRM segmentation — OneID, weekly tags, clusters and audience packs.

>>> import segments as sg                       # doctest: +SKIP
>>> ws = sg.open_workspace("workspace/")        # doctest: +SKIP
>>> ws.tags().select("one_id", "is_high_value").collect()   # doctest: +SKIP
"""

from segments.workspace import Workspace, open_workspace

__version__ = "0.1.0"

__all__ = ["Workspace", "__version__", "open_workspace"]
