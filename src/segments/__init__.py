"""segments: private-domain CRM segmentation — OneID, weekly tags, clusters and audience packs."""

__version__ = "0.1.0"
