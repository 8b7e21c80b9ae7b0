"""The demo's chat sentences and search queries: pools rendered once from the vocabulary, with a fixed seed."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import polars as pl

from segments.demo.vocabulary import (
    _ANSWER,
    _CAT_INTEREST,
    _CHAT,
    _DEAL,
    _EMOJI,
    _EMPTY,
    _Q,
    _SHARE,
    CATEGORIES,
    INTERESTS,
    words,
)


@dataclass(frozen=True)
class _Pool:
    """A flat list of strings and, per key, where its entries start and how many there are."""

    values: pl.Series
    start: np.ndarray
    count: np.ndarray

    def pick(self, rng: np.random.Generator, key: np.ndarray) -> pl.Series:
        idx = self.start[key] + (rng.random(len(key)) * self.count[key]).astype(np.int64)
        return self.values.gather(idx)


def _pool(groups: list[list[str]]) -> _Pool:
    count = np.array([len(g) for g in groups])
    return _Pool(
        pl.Series([s for g in groups for s in g], dtype=pl.String), np.cumsum(count) - count, count
    )


def _render(
    templates: tuple[str, ...], slots: dict[str, tuple[str, ...]], rng: np.random.Generator
) -> list[str]:
    """Each template filled with 12 slot combinations (repeating when it has fewer): templates weigh alike."""
    out: list[str] = []
    for t in templates:
        names = [n for n in ("place", "gear", "act") if "{" + n + "}" in t]
        combos = list(itertools.product(*(slots[n] for n in names)))
        picks = rng.permutation(len(combos))[np.arange(12) % len(combos)]
        out.extend(t.format(**dict(zip(names, combos[i], strict=True))) for i in picks)
    return out


@functools.cache
def _texts(vocabulary: str = "a") -> dict[str, _Pool]:
    """Chat pools keyed by (kind, interest + 1) with 0 meaning "no interest"; search queries by
    category, written with the words of its interest (never the category's own name)."""
    # A fixed seed: the sentences are part of the brand, not of a population.
    rng = np.random.default_rng(20261122)
    w = words(vocabulary)
    all_gear = tuple(g for i in INTERESTS for g in w.chat[i]["gear"])
    groups: list[list[str]] = []
    for kind in range(7):
        for i in range(-1, len(INTERESTS)):
            c = w.chat[INTERESTS[i] if i >= 0 else INTERESTS[int(rng.integers(len(INTERESTS)))]]
            slots = {"place": c["places"], "gear": c["gear"], "act": c["acts"]}
            if kind == _Q:
                g = _render(w.question_templates, slots, rng) + list(c["questions"]) * 6
            elif kind == _SHARE:
                g = _render(w.share_templates, slots, rng) + list(c["shares"]) * 6
            elif kind == _ANSWER:
                g = _render(w.answer_templates, slots, rng)
            elif kind == _DEAL:
                deal_gear = c["gear"] if i >= 0 else all_gear
                g = _render(w.deal_templates, {**slots, "gear": deal_gear}, rng)
            elif kind == _CHAT:
                g = list(w.small_talk)
            elif kind == _EMPTY:
                g = [""]
            elif kind == _EMOJI:
                g = list(w.emojis)
            else:
                raise AssertionError(f"demo: message kind {kind} has no texts")
            groups.append(g)
    queries: list[list[str]] = []
    for j in range(len(CATEGORIES)):
        gear = w.chat[INTERESTS[_CAT_INTEREST[j]]]["gear"]
        own = gear[j % len(gear)]  # the word this category is mostly searched by
        generic = [f"{p}{g}{s}" for p in w.query_prefixes for g in gear for s in w.query_suffixes]
        pick = rng.permutation(len(generic))[:6]
        queries.append(
            [own, own, *(f"{p}{own}" for p in w.query_prefixes[:2]), *(generic[k] for k in pick)]
        )
    return {"chat": _pool(groups), "query": _pool(queries)}


def _chat_key(kind: np.ndarray, interest: np.ndarray) -> np.ndarray:
    return kind.astype(np.int64) * (len(INTERESTS) + 1) + interest.astype(np.int64) + 1
