"""The person state: what each delivery updates, so a build costs what is new.

`store` keeps generations of immutable files behind one pointer (a crash leaves the last good
state); `rows` is the row store (the kept rows the stages read, slim, by week, keyed by
identifier); `event_long` the long-run event aggregates per identifier; `fold` folds a
delivery in. See docs/state.md.
"""

from segments.state.fold import FoldReport, State, fold, state_digest
from segments.state.store import StateStore

__all__ = ["FoldReport", "State", "StateStore", "fold", "state_digest"]
