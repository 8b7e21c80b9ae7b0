"""OneID: the identity graph that groups every identifier seen into people (`one_id`)."""

from segments.identity.build import IdentityResult, build_identity, wait_for_saves
from segments.identity.cache import NodeCache
from segments.identity.graph import ComponentsFn
from segments.identity.incremental import MAP_TOKEN_KEY, map_token_of
from segments.identity.lookup import attach_one_id, bcubed, lookup
from segments.identity.schema import (
    CHANGES_SCHEMA,
    MAP_SCHEMA,
    REJECTED_IDS_SCHEMA,
    REJECTED_LINKS_SCHEMA,
)
from segments.settings.identity import IdentityConfig

__all__ = [
    "CHANGES_SCHEMA",
    "MAP_SCHEMA",
    "MAP_TOKEN_KEY",
    "REJECTED_IDS_SCHEMA",
    "REJECTED_LINKS_SCHEMA",
    "ComponentsFn",
    "IdentityConfig",
    "IdentityResult",
    "NodeCache",
    "attach_one_id",
    "bcubed",
    "build_identity",
    "lookup",
    "map_token_of",
    "wait_for_saves",
]
