"""Source adapters: map another system's export (column names, encoding, values) onto the contract.

An adapter is a TOML file in `configs/adapters/` (or a `[adapters.NAME]` table in the config):

```toml
name = "taobao_seller"
table = "orders"
files = ["*ExportOrderList*", "*订单*"]   # glob patterns on the file name
encoding = "gb18030"
[columns]                                 # contract column = source column(s); first non-empty wins
order_id = "订单编号"
paid_at = ["订单付款时间", "订单创建时间"]
[constants]
source = "taobao"
[values.status]                           # source value -> contract value
"交易成功" = "paid"
[skip_values]                             # source column -> values that mark a row skipped
"订单状态" = ["等待买家付款"]
```
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from segments.contract import TABLES, TIMESTAMP, TS
from segments.errors import ConfigError, DataError
from segments.exprs import blank_to_null
from segments.settings.load import load

SKIP = "_skip_reason"

# Shipped with the package (segments/configs/adapters), and the repository's configs/adapters.
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "configs" / "adapters"
REPO_DIR = Path(__file__).resolve().parents[3] / "configs" / "adapters"


def _folded_column(columns: list[str], name: str) -> str | None:
    """The column whose name is the contract's `name` but for case and surrounding spaces
    (`Status`, ` refund`), read as `name` rather than left out unseen (a refunded order would
    read as paid). None when there is none; two such columns are an error, `name` itself among
    them (`status` beside `Status`: one of the two was once read unseen)."""
    found = [c for c in columns if c.strip().lower() == name]
    if len(found) > 1:
        shown = " and ".join(f"'{c}'" for c in found[:2])
        raise DataError(
            f"the header holds {shown}, both read as the column '{name}'; "
            "rename or remove one of them."
        )
    return found[0] if found else None


class Adapter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    table: str
    description: str = ""
    files: list[str] = Field(default_factory=list)
    encoding: str = "utf-8"
    columns: dict[str, str | list[str]] = Field(default_factory=dict)
    constants: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    skip_values: dict[str, list[str]] = Field(default_factory=dict)
    # Contract columns given as epoch milliseconds (WeCom's msgtime).
    epoch_ms: list[str] = Field(default_factory=list)
    # Derive `category` by finding a taxonomy product category in this contract column's text.
    category_from: str | None = None
    # A CSV with columns sku,category: the category of each SKU (wins over category_from).
    sku_categories: str | None = None
    # WeCom archive: a message whose text starts with "@" and whose `tolist` names one person
    # addresses that person; read it as a mention.
    mentions_from_tolist: bool = False

    @field_validator("table")
    @classmethod
    def _known_table(cls, v: str) -> str:
        if v not in TABLES:
            raise ValueError(f"must be one of {', '.join(TABLES)}")
        return v

    def relative_to(self, folder: Path | None) -> Adapter:
        """This adapter with a relative `sku_categories` path taken from `folder` (the folder
        of the file that declares the adapter) instead of the working directory."""
        if folder is None or not self.sku_categories or Path(self.sku_categories).is_absolute():
            return self
        return self.model_copy(update={"sku_categories": str(folder / self.sku_categories)})

    def matches(self, path: Path) -> bool:
        return any(fnmatch.fnmatch(path.name, pattern) for pattern in self.files)

    def apply(
        self, df: pl.DataFrame, categories: list[str] | None = None, tz: str | None = None
    ) -> pl.DataFrame:
        """Rename, fill constants and map values, returning contract columns (as text) plus `_row`
        and `_skip_reason`. With `tz`, an `epoch_ms` timestamp column whose every value is
        epoch milliseconds comes back typed, in local time (`tz`), as validation reads it:
        the value text with an offset would be parsed back to (WeCom's msgtime: 0.5 s less
        on 390k messages)."""
        table = TABLES[self.table]
        # Validation trims every contract column and reads blank text as missing, so only the
        # columns this adapter looks into are trimmed here (trimming every column of every row
        # here as well cost 0.12 s per million events).
        looked_into = {*self.values, *self.epoch_ms, self.category_from}
        if self.sku_categories:
            looked_into.add("sku")
        exprs: list[pl.Expr] = [pl.col("_row")]
        mapped: set[str] = set()
        for target, sources in self.columns.items():
            srcs = [
                s for s in ([sources] if isinstance(sources, str) else sources) if s in df.columns
            ]
            if not srcs:
                continue
            exprs.append(self._source(df, srcs, target in looked_into).alias(target))
            mapped.add(target)
        for name in table.names:
            if name in mapped or name in self.constants:
                continue
            src = _folded_column(df.columns, name)
            if src is not None:
                exprs.append(self._source(df, [src], name in looked_into).alias(name))
                mapped.add(name)
        for target, value in self.constants.items():
            exprs.append(pl.lit(value, dtype=pl.String).alias(target))
            mapped.add(target)
        skip = [
            pl.when(_text(df, col).str.strip_chars().is_in(vals)).then(
                pl.lit(f"{col} is '") + _text(df, col).str.strip_chars() + pl.lit("'")
            )
            for col, vals in self.skip_values.items()
            if col in df.columns
        ]
        exprs.append((pl.coalesce(skip) if skip else pl.lit(None, pl.String)).alias(SKIP))
        if (
            self.mentions_from_tolist
            and "tolist" in df.columns
            and isinstance(df.schema["tolist"], pl.List)
        ):
            text_col = next((c for c in ("text.content", "text") if c in df.columns), None)
            addressed = pl.col("tolist").list.len() == 1
            if text_col is not None:
                addressed = addressed & pl.col(text_col).cast(pl.String).str.starts_with("@")
            exprs.append(pl.when(addressed).then(pl.col("tolist")).alias("mentions"))
        out = df.select(exprs)
        for col in self.epoch_ms:
            if col in out.columns:
                # milliseconds since 1970 have 13 digits from September 2001 to 2286: a shorter
                # number (seconds, or a cut-off value) is no time in milliseconds, and is left
                # as text, which the timestamp check rejects
                is_ms = pl.col(col).str.contains(r"^\d{13}$")
                if (
                    tz is not None
                    and col in table.names
                    and table.column(col).kind == TS
                    and col not in self.values
                    and col != self.category_from
                    and out.select((is_ms | pl.col(col).is_null()).all()).item()
                ):
                    out = out.with_columns(
                        pl.from_epoch(pl.col(col).cast(pl.Int64), time_unit="ms")
                        .dt.replace_time_zone("UTC")
                        .dt.convert_time_zone(tz)
                        .dt.replace_time_zone(None)
                        .cast(TIMESTAMP)
                        .alias(col)
                    )
                    continue
                out = out.with_columns(
                    pl.when(is_ms)
                    .then(
                        pl.from_epoch(pl.col(col).cast(pl.Int64, strict=False), time_unit="ms")
                        .dt.replace_time_zone("UTC")
                        .dt.to_string("%Y-%m-%dT%H:%M:%S%.f%:z")
                    )
                    .otherwise(pl.col(col))
                    .alias(col)
                )
        for col, mapping in self.values.items():
            if col in out.columns:
                out = out.with_columns(pl.col(col).replace(mapping).alias(col))
        if self.sku_categories and "sku" in out.columns:
            out = _categories_from_skus(out, Path(self.sku_categories))
        if self.category_from and categories and self.category_from in out.columns:
            found = (
                pl.col(self.category_from)
                .str.extract_many(sorted(categories, key=len, reverse=True), leftmost=True)
                .list.first()
            )
            out = out.with_columns(
                (
                    pl.coalesce(pl.col("category"), found) if "category" in out.columns else found
                ).alias("category")
            )
        return out

    @staticmethod
    def _source(df: pl.DataFrame, srcs: list[str], trim: bool) -> pl.Expr:
        """A contract column from its source columns: the first with a value (blank text is
        none), trimmed when `trim`; one source column that need not be trimmed, as it is."""
        if len(srcs) == 1 and not trim:
            return pl.col(srcs[0])
        cols = [
            pl.col(s) if isinstance(df.schema[s], pl.List) else blank_to_null(pl.col(s))
            for s in srcs
        ]
        return pl.coalesce(cols) if len(cols) > 1 else cols[0]

    def missing_sources(self, df_columns: list[str]) -> dict[str, list[str]]:
        """Contract columns whose every source column is absent from the file."""
        gone: dict[str, list[str]] = {}
        for target, sources in self.columns.items():
            srcs = [sources] if isinstance(sources, str) else sources
            if not any(s in df_columns for s in srcs):
                gone[target] = srcs
        return gone


def _text(df: pl.DataFrame, col: str) -> pl.Expr:
    """A column as text; a list (a JSON array where text was expected) as its items joined."""
    if isinstance(df.schema[col], pl.List):
        return pl.col(col).cast(pl.List(pl.String)).list.join(",")
    return pl.col(col).cast(pl.String)


def _categories_from_skus(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    try:
        skus = pl.read_csv(path, infer_schema=False, glob=False).select(
            "sku", pl.col("category").alias("_sku_cat")
        )
    except Exception as e:
        raise ConfigError(
            f"{path}: cannot read the SKU-to-category file (columns sku,category): {e}"
        ) from None
    out = df.join(skus.unique("sku", keep="last"), on="sku", how="left", maintain_order="left")
    if "category" in out.columns:
        return out.with_columns(pl.coalesce("_sku_cat", "category").alias("category")).drop(
            "_sku_cat"
        )
    return out.rename({"_sku_cat": "category"})


# The WeCom chat-archive JSON line, read natively as a messages file.
WECOM_ARCHIVE = Adapter(
    name="wecom_archive",
    table="messages",
    description="WeCom chat-archive (会话内容存档) JSON lines",
    columns={
        "msg_id": "msgid",
        "sender_id": "from",
        "room_id": "roomid",
        "ts": "msgtime",
        "text": ["text.content"],
    },
    constants={"sender_id_type": "wecom_external_userid"},
    epoch_ms=["ts"],
    skip_values={"action": ["recall", "switch"]},
    mentions_from_tolist=True,
)


def is_wecom_archive(columns: list[str]) -> bool:
    return "msgid" in columns and "msgtime" in columns


def load_adapter_file(path: Path) -> Adapter:
    return load(Adapter, path, "adapter").relative_to(path.parent)


def builtin_adapters() -> dict[str, Adapter]:
    """Adapters shipped with the engine (configs/adapters/*.toml) plus the WeCom archive reader."""
    found: dict[str, Adapter] = {WECOM_ARCHIVE.name: WECOM_ARCHIVE}
    for folder in (BUILTIN_DIR, REPO_DIR):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                adapter = load_adapter_file(path)
                found.setdefault(adapter.name, adapter)
    return found
