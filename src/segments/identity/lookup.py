"""Using the OneID map: attach one_ids to a table, look a person up, score a clustering."""

from __future__ import annotations

import polars as pl

from segments.contract import id_forms, mask_value, normalize_phone, sha256_hex
from segments.errors import DataError
from segments.identity.gather import _names
from segments.settings.identity import NODE_TYPES

# ---------------------------------------------------------------------------------------------
# Using the map


def attach_one_id(
    lf: pl.LazyFrame,
    id_map: pl.LazyFrame | pl.DataFrame,
    id_type_col: str,
    id_col: str,
) -> pl.LazyFrame:
    """`lf` with a `one_id` column from `id_map` (one_id, id_type, id), by a left join.

    Rows whose identifier is not in the map (rejected, or never seen) get a null one_id; the
    caller decides what to do with them. `id_type_col` names the column holding the id type,
    or is a known id type used as a literal when `lf` has no such column or it equals `id_col`
    (`attach_one_id(orders, m, "phone_sha256", "phone_sha256")`). An existing `one_id` is
    replaced.
    """
    names = _names(lf)
    if id_col not in names:
        raise DataError(f"attach_one_id: the table has no column '{id_col}'")
    if id_type_col in NODE_TYPES and (id_type_col not in names or id_type_col == id_col):
        type_expr = pl.lit(id_type_col)
    elif id_type_col in names:
        type_expr = pl.col(id_type_col).cast(pl.String)
    else:
        raise DataError(
            f"attach_one_id: the table has no column '{id_type_col}' and it is not an id type"
        )
    mapping = (id_map.lazy() if isinstance(id_map, pl.DataFrame) else id_map).select(
        pl.col("id_type").cast(pl.String).alias("__t"),
        pl.col("id").cast(pl.String).alias("__i"),
        pl.col("one_id").cast(pl.String).alias("one_id"),
    )
    base = lf.drop("one_id") if "one_id" in names else lf
    return (
        base.with_columns(type_expr.alias("__t"), pl.col(id_col).cast(pl.String).alias("__i"))
        .join(mapping, on=["__t", "__i"], how="left", maintain_order="left")
        .drop("__t", "__i")
    )


def lookup(one_id_map: pl.DataFrame, id_type: str, id: str) -> pl.DataFrame:
    """All rows of `one_id_map` for the person holding (id_type, id); empty when unknown.

    A raw `phone` is normalised and hashed first, and looked up as its `phone_sha256`.
    """
    forms = [id]
    if id_type == "phone":
        digits = pl.select(normalize_phone(pl.lit(id, dtype=pl.String))).item()
        if digits is None:
            raise DataError(
                f"lookup: '{mask_value(id, True)}' is not a valid mainland mobile number "
                "(11 digits, 1[3-9]...)"
            )
        id_type = "phone_sha256"
        forms = [pl.select(sha256_hex(pl.lit(digits))).item()]
    elif id_type != "one_id":
        forms = id_forms(id_type, id)  # an id holding a phone is stored hashed
    person = one_id_map.filter((pl.col("id_type") == id_type) & pl.col("id").is_in(forms)).select(
        "one_id"
    )
    return one_id_map.join(person.unique(), on="one_id", how="semi").sort("id_type", "id")


def bcubed(pred: pl.DataFrame, truth: pl.DataFrame) -> tuple[float, float]:
    """B-cubed (precision, recall) of the clustering `pred` (one_id, id_type, id) against
    `truth` (person_id, id_type, id), over the identifiers present in both.

    Precision averages, over identifiers, the share of its predicted cluster that shares its
    true person; recall, the share of its true person that shares its predicted cluster.
    """
    for name, frame, cluster in (("pred", pred, "one_id"), ("truth", truth, "person_id")):
        missing = [c for c in (cluster, "id_type", "id") if c not in frame.columns]
        if missing:
            raise DataError(f"bcubed: {name} has no column {', '.join(missing)}")
        if frame.select(pl.struct("id_type", "id").is_duplicated().any()).item():
            raise DataError(f"bcubed: {name} assigns some identifier to more than one cluster")
    both = pred.select("one_id", "id_type", "id").join(
        truth.select("person_id", "id_type", "id"), on=["id_type", "id"], how="inner"
    )
    total = both.height
    if total == 0:
        raise DataError("bcubed: no identifier is in both pred and truth")
    cells = both.group_by("one_id", "person_id").agg(pl.len().cast(pl.Float64).alias("n"))
    scored = cells.with_columns(
        pl.col("n").sum().over("one_id").alias("n_pred"),
        pl.col("n").sum().over("person_id").alias("n_true"),
    )
    precision, recall = scored.select(
        ((pl.col("n") ** 2 / pl.col("n_pred")).sum() / total).alias("precision"),
        ((pl.col("n") ** 2 / pl.col("n_true")).sum() / total).alias("recall"),
    ).row(0)
    return float(precision), float(recall)
