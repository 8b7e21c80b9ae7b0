"""Model files: a fitted `UserClusterer` as a skops file (never pickle), loaded by allow-list."""

from __future__ import annotations

from pathlib import Path

from segments.clustering.estimator import SILHOUETTE_ROWS, STABILITY_ROWS, UserClusterer
from segments.errors import DataError

# The class names are those skops records, `segments.clustering.<name>`: the package keeps
# reporting that module for the classes a model file holds (see `segments/clustering/__init__.py`).
ALLOWED_TYPES = frozenset(
    {
        "segments.clustering.UserClusterer",
        "segments.clustering.FeatureSpace",
        "sklearn.cluster._kmeans.KMeans",
        "sklearn.cluster._kmeans.MiniBatchKMeans",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.float32",
        "numpy.float64",
        "numpy.int32",
        "numpy.int64",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "builtins.tuple",
        "builtins.list",
        "builtins.dict",
        "builtins.NoneType",
        "numpy.random._mt19937.MT19937",
        "numpy.random.mtrand.RandomState",
    }
)


def save_model(clusterer: UserClusterer, path: str | Path) -> None:
    """Write a fitted clusterer as a skops file, byte for byte the same for the same model.

    skops names its array members after Python object ids and stamps the zip entries with
    the current time; both are replaced (ids by their order in schema.json, times by
    1980-01-01) so that rebuilding a week gives an identical file."""
    import io
    import re
    import zipfile

    import skops.io as sio

    raw = sio.dumps(clusterer)
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        members = {name: z.read(name) for name in z.namelist()}
    schema = members.pop("schema.json").decode("utf-8")
    # Object ids (memory addresses, ten digits or more) in order of first appearance.
    ids: dict[str, str] = {}
    for m in re.finditer(r'"__id__": (\d+)|"file": "(\d+)\.npy"', schema):
        ids.setdefault(m.group(1) or m.group(2), str(len(ids) + 1))
    if ids:  # one pass over the text: every run of digits that is an object id is renumbered
        schema = re.sub(r"(?<!\d)\d+(?!\d)", lambda m: ids.get(m.group(0), m.group(0)), schema)
    out = {"schema.json": schema.encode("utf-8")}
    for name, data in members.items():
        stem = name[: -len(".npy")] if name.endswith(".npy") else None
        out[f"{ids[stem]}.npy" if stem in ids else name] = data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(out):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            z.writestr(info, out[name])
    Path(path).write_bytes(buf.getvalue())


def load_model(path: str | Path) -> UserClusterer:
    """Read a skops file written by `save_model`, refusing any type outside `ALLOWED_TYPES`.

    Raises DataError naming the untrusted types (or when the file is not a UserClusterer).
    """
    import skops.io as sio

    path = Path(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a damaged or foreign file
        raise DataError(f"{path}: not a readable skops model file ({exc}).") from None
    refused = sorted(t for t in untrusted if t not in ALLOWED_TYPES)
    if refused:
        raise DataError(f"{path}: refusing to load untrusted type(s) {', '.join(refused)}.")
    model = sio.load(path, trusted=list(untrusted))
    if not isinstance(model, UserClusterer):
        raise DataError(f"{path}: holds a {type(model).__name__}, not a UserClusterer.")
    # saved before these parameters existed: their defaults
    for name, default in (
        ("n_jobs", 1),
        ("silhouette_rows", SILHOUETTE_ROWS),
        ("stability_rows", STABILITY_ROWS),
        ("least", None),
    ):
        if not hasattr(model, name):
            setattr(model, name, default)
    return model
