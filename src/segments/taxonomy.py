"""The interest taxonomy: interests, their product categories and their text vocabulary."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, model_validator

from segments.settings.load import read_toml, shipped, validated

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NON_WORD = re.compile(r"[^a-z0-9]+")


# an ASCII or full-width letter or digit: a text without one holds no ASCII keyword
_HAS_WORD = "[A-Za-z0-9\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]"


# OpenCC's conversions of simplified Chinese: to standard traditional characters, to those of
# Taiwan and of Hong Kong, and to Taiwan's own words ("自行车" -> "腳踏車")
TRADITIONAL = ("s2t", "s2tw", "s2hk", "s2twp")


@functools.cache
def _converters() -> tuple[Any, ...]:
    import opencc  # the conversion tables load once, when a taxonomy is first matched

    return tuple(opencc.OpenCC(name) for name in TRADITIONAL)


@functools.lru_cache(maxsize=1 << 16)
def traditional_forms(word: str) -> tuple[str, ...]:
    """A Chinese word as traditional-character text writes it (`TRADITIONAL`), sorted,
    without the word itself: "露营帐篷" -> ("露營帳篷",). Empty for an ASCII word or one that
    every conversion leaves as it is."""
    if word.isascii():
        return ()
    return tuple(sorted({c.convert(word) for c in _converters()} - {word}))


def ascii_words(text: pl.Expr) -> pl.Expr:
    """The ASCII words of a text (runs of A-Z, a-z and 0-9; CJK, punctuation, "_" and "-"
    separate them), two spaces apart, in their own case: matching is ASCII case-insensitive."""
    return text.str.extract_all("[A-Za-z0-9]+").list.join("  ")


def _first_mask(found: pl.Expr, masks: dict[str, int]) -> pl.Expr:
    """The OR of the masks of the matches in `found` (a list of matched strings; 0 for none)."""
    ored = found.list.eval(
        pl.element()
        .str.to_lowercase()
        .replace_strict(masks, default=0, return_dtype=pl.UInt64)
        .bitwise_or()
    )
    return ored.list.first().fill_null(0).cast(pl.UInt64)


class Interest(BaseModel):
    """One interest tag: a snake_case name, a display label, product categories and keywords."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    label: str = ""
    categories: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


class Taxonomy(BaseModel):
    """An ordered set of interests.

    Rules checked on load (every violation is reported, not just the first): at least one
    interest; names are snake_case and unique; every interest has a label, at least one
    category and at least one keyword; no blank category or keyword; a category belongs to one
    interest only. A keyword may belong to several interests and then counts for each of them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    interests: tuple[Interest, ...]

    @model_validator(mode="before")
    @classmethod
    def _from_table(cls, data: Any) -> Any:
        # TOML form: [interests.<name>] tables -> a list of Interest with their names.
        if isinstance(data, dict) and isinstance(data.get("interests"), dict):
            data = dict(data)
            items = []
            for name, body in data["interests"].items():
                items.append({"name": name, **body} if isinstance(body, dict) else body)
            data["interests"] = items
        return data

    @model_validator(mode="after")
    def _check(self) -> Taxonomy:
        problems: list[str] = []
        if not self.interests:
            problems.append("no interests defined")
        if len(self.interests) > 64:
            problems.append(f"{len(self.interests)} interests; at most 64 are supported")
        seen_names: set[str] = set()
        owner: dict[str, str] = {}
        for it in self.interests:
            where = f"interest '{it.name}'"
            if not _NAME_RE.match(it.name):
                problems.append(f"{where}: name must be snake_case ASCII (a-z, 0-9, _)")
            if it.name in seen_names:
                problems.append(f"{where}: defined twice")
            seen_names.add(it.name)
            if not it.label.strip():
                problems.append(f"{where}: empty label")
            if not it.categories:
                problems.append(f"{where}: no categories")
            if not it.keywords:
                problems.append(f"{where}: no keywords")
            if any(not c.strip() for c in it.categories):
                problems.append(f"{where}: a blank category")
            if any(not k.strip() for k in it.keywords):
                problems.append(f"{where}: a blank keyword")
            for cat in it.categories:
                cat = cat.strip()
                if cat and cat in owner and owner[cat] != it.name:
                    problems.append(
                        f"category '{cat}' is listed under both '{owner[cat]}' and '{it.name}'"
                    )
                owner.setdefault(cat, it.name)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- views ------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Interest names in taxonomy order (the order of the `interest_<name>` columns)."""
        return [it.name for it in self.interests]

    def category_map(self) -> dict[str, str]:
        """Product category -> interest name."""
        return {c.strip(): it.name for it in self.interests for c in it.categories}

    def keyword_map(self) -> dict[str, list[str]]:
        """Keyword (lower-cased, stripped) -> interest names, in taxonomy order, no repeats."""
        out: dict[str, list[str]] = {}
        for it in self.interests:
            for kw in it.keywords:
                key = kw.strip().lower()
                names = out.setdefault(key, [])
                if it.name not in names:
                    names.append(it.name)
        return out

    def matched_keywords(self) -> dict[str, list[str]]:
        """`keyword_map` and the traditional forms of its Chinese keywords (`traditional_forms`:
        "帐篷" is also "帳篷", "自行车" also "腳踏車"), each form with its keyword's interests:
        what the matching looks for."""
        out = {k: list(v) for k, v in self.keyword_map().items()}
        for kw, names in self.keyword_map().items():
            for form in traditional_forms(kw):
                held = out.setdefault(form.lower(), [])
                held.extend(n for n in names if n not in held)
        return out

    def patterns(self) -> list[str]:
        """The keywords matched inside text (any holding a non-ASCII character) and their
        traditional forms (`matched_keywords`), for Aho-Corasick, longest first
        (leftmost-longest with `leftmost=True`)."""
        return sorted(
            (k for k in self.matched_keywords() if not k.isascii()), key=lambda k: (-len(k), k)
        )

    def word_masks(self) -> dict[str, int]:
        """The ASCII keywords as whole words: each word form (the keyword's words joined by two
        spaces, and with an "s" or "es" added to a last word of letters: "tent", "tents")
        padded with one space on each side -> the mask of its interests. They are matched in
        the text's `ascii_words` (leftmost-longest, as the other keywords), so "tent" is found
        in "Tent", "露营tent", "camping_tent" and "TENTS", not in "content"; "snow peak" in
        "Snow-Peak"; "camping stove" is one match, not also "camping"."""
        out: dict[str, int] = {}
        for kw, mask in self.keyword_masks().items():
            if not kw.isascii():
                continue
            base = "  ".join(w for w in _NON_WORD.split(kw.lower()) if w)
            if not base:
                continue
            forms = [base] + ([base + "s", base + "es"] if base[-1].isalpha() else [])
            for form in forms:
                out[f" {form} "] = out.get(f" {form} ", 0) | mask
        return out

    def bit(self, name: str) -> int:
        """The bit of interest `name` in an interest mask (taxonomy order: bit 0 is the first)."""
        return 1 << self.names.index(name)

    def keyword_masks(self) -> dict[str, int]:
        """Keyword (lower-cased), or a traditional form of one (`matched_keywords`) -> mask of
        the interests it belongs to."""
        return {k: sum(self.bit(n) for n in v) for k, v in self.matched_keywords().items()}

    def text_mask(self, text: pl.Expr) -> pl.Expr:
        """UInt64 mask of the interests whose keywords occur in `text` (0 for none or null).

        Keywords with a non-ASCII character, and their traditional forms ("帳篷" for "帐篷"),
        are found inside the text: Aho-Corasick (`str.extract_many`), leftmost-longest,
        non-overlapping, ASCII case-insensitive. ASCII
        keywords are whole words (`word_masks`), found the same way among the text's ASCII
        words, after NFKC normalisation (full-width "ＴＥＮＴ" is "TENT"); a text with no ASCII
        or full-width letter or digit skips that part. A keyword listed under several
        interests sets each of their bits. Masks are the fast path for large tables: OR-ing
        them de-duplicates for free.
        """
        inside = self.patterns()
        if inside:
            found = text.str.extract_many(inside, ascii_case_insensitive=True, leftmost=True)
            mask = _first_mask(found, self.keyword_masks())
        else:  # a taxonomy of English words only
            mask = pl.lit(0, pl.UInt64)
        words = self.word_masks()
        if not words:
            return mask
        # the ASCII words two spaces apart, so that a match, which takes one space on each
        # side, leaves the next word its own ("tent camping" finds both)
        padded = pl.when(text.str.contains(_HAS_WORD)).then(
            pl.concat_str(pl.lit(" "), ascii_words(text.str.normalize("NFKC")), pl.lit(" "))
        )
        found = padded.str.extract_many(
            sorted(words, key=lambda w: (-len(w), w)), ascii_case_insensitive=True, leftmost=True
        )
        return (mask | _first_mask(found, words)).cast(pl.UInt64)

    def category_mask(self, category: pl.Expr) -> pl.Expr:
        """UInt64 mask for a product category: its owner when the category, or a traditional
        form of it ("帳篷"), is in the taxonomy, else the keywords found in it ("户外帐篷" ->
        camping); 0 for null."""
        cat = category.str.strip_chars()
        exact = {c: self.bit(n) for c, n in self.category_map().items()}
        for c, n in self.category_map().items():
            for form in traditional_forms(c):
                exact.setdefault(form, self.bit(n))
        return (
            cat.replace_strict(exact, default=None, return_dtype=pl.UInt64)
            .fill_null(self.text_mask(cat))
            .fill_null(0)
        )

    def mask_interests(self, mask: pl.Expr) -> pl.Expr:
        """list[str] of the interests in a mask, taxonomy order. Meant for a few distinct masks
        (decode the unique masks, then join), not for every row of a large table."""
        return pl.concat_list(
            [pl.when((mask & self.bit(n)) != 0).then(pl.lit(n)) for n in self.names]
        ).list.drop_nulls()

    def text_interests(self, text: pl.Expr) -> pl.Expr:
        """list[str] of interests whose keywords occur in `text`, taxonomy order, each once
        (empty for no match, empty or null text). See `text_mask` for the matching rules."""
        return self.mask_interests(self.text_mask(text))


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Read and validate a taxonomy TOML file (default: the shipped `configs/taxonomy.toml`).

    Raises ConfigError naming the file and listing every problem found.
    """
    path = Path(path) if path is not None else shipped("taxonomy.toml")
    data = read_toml(path, "taxonomy")
    return taxonomy_from_dict(data, where=str(path))


def taxonomy_from_dict(data: dict[str, Any], where: str = "taxonomy") -> Taxonomy:
    """Validate a taxonomy given as a dict (the TOML shape); ConfigError lists every problem."""
    return validated(Taxonomy, data, where)
