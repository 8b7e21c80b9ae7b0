"""The person state's files on disk: immutable data files, numbered manifests and one pointer.

```
WS/state/CURRENT                  the name of the manifest in force, e.g. manifest-000042.json
WS/state/manifest-000042.json     what generation 42 is: its files and what they cover
WS/state/files/g000042-....parquet  data files, written once, never changed
```

A change (a delivery folded in) is a `Transaction`: it writes new data files under names no
earlier generation used, then `commit` writes the manifest and replaces `CURRENT` in one
rename. A crash before that rename leaves the last committed generation in force, whole; the
half-written files of the dead transaction are removed by the next one (`sweep`). Files that
neither the committed manifest nor its predecessor name are deleted after a commit, so a
reader that opened the previous generation can still finish.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segments.errors import DataError
from segments.io import atomic_path

STATE_VERSION = 1
_MANIFEST = re.compile(r"^manifest-(\d{6})\.json$")


@dataclass(frozen=True)
class Generation:
    """One committed state: its number and its manifest (a JSON object)."""

    number: int
    manifest: dict[str, Any]

    def files(self) -> set[str]:
        """Every data file the manifest names (values of `files` lists anywhere in it)."""
        return set(_named_files(self.manifest))


def _named_files(obj: Any) -> Iterable[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "files" and isinstance(value, list):
                yield from (v for v in value if isinstance(v, str))
            else:
                yield from _named_files(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _named_files(value)


class StateStore:
    """The state folder of one workspace (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files = self.root / "files"

    def current(self) -> Generation | None:
        """The committed generation, or None when the workspace has no state yet."""
        pointer = self.root / "CURRENT"
        if not pointer.is_file():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        m = _MANIFEST.match(name)
        if not m:
            raise DataError(f"{pointer}: not a state pointer ({name!r}); remove {self.root}.")
        try:
            manifest = json.loads((self.root / name).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{self.root / name}: cannot read the state ({e}).") from None
        return Generation(int(m.group(1)), manifest)

    def path(self, name: str) -> Path:
        """The path of a data file named in a manifest."""
        return self.files / name

    def begin(self) -> Transaction:
        """Start the next generation (call under the workspace lock)."""
        current = self.current()
        number = (current.number if current else 0) + 1
        tx = Transaction(self, number, current)
        tx.sweep()
        return tx

    def _manifests(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(
            int(m.group(1)) for p in self.root.iterdir() if (m := _MANIFEST.match(p.name))
        )


@dataclass
class Transaction:
    """A generation being written: `new_file` names its data files, `commit` makes it current."""

    store: StateStore
    number: int
    base: Generation | None
    written: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"g{self.number:06d}-"

    def new_file(self, stem: str, suffix: str = ".parquet") -> tuple[str, Path]:
        """A fresh data file name (unique in this generation) and its path; the caller writes it."""
        name = f"{self.prefix}{len(self.written):06d}-{stem}{suffix}"
        self.written.append(name)
        self.store.files.mkdir(parents=True, exist_ok=True, mode=0o700)
        return name, self.store.path(name)

    def sweep(self) -> None:
        """Remove what an uncommitted transaction of this number (a crash) left behind."""
        if self.store.files.is_dir():
            for p in self.store.files.glob(f"{self.prefix}*"):
                p.unlink(missing_ok=True)
        for n in self.store._manifests():
            if n >= self.number:
                (self.store.root / f"manifest-{n:06d}.json").unlink(missing_ok=True)

    def commit(self, manifest: dict[str, Any]) -> Generation:
        """Write the manifest, point CURRENT at it (one rename), then delete the files that
        neither this generation nor the one before it names."""
        manifest = {"version": STATE_VERSION, "generation": self.number, **manifest}
        gen = Generation(self.number, manifest)
        missing = [f for f in gen.files() if not self.store.path(f).is_file()]
        if missing:
            raise DataError(f"state generation {self.number} names missing files: {missing[:3]}")
        name = f"manifest-{self.number:06d}.json"
        with atomic_path(self.store.root / name) as tmp:
            tmp.write_text(json.dumps(manifest, sort_keys=True, indent=1), encoding="utf-8")
            tmp.chmod(0o600)
        with atomic_path(self.store.root / "CURRENT") as tmp:
            tmp.write_text(name + "\n", encoding="utf-8")
        self._collect(gen)
        return gen

    def _collect(self, gen: Generation) -> None:
        keep = gen.files() | (self.base.files() if self.base else set())
        if self.store.files.is_dir():
            for p in self.store.files.iterdir():
                if p.name not in keep:
                    p.unlink(missing_ok=True)
        for n in self.store._manifests():
            if n < (self.base.number if self.base else self.number):
                (self.store.root / f"manifest-{n:06d}.json").unlink(missing_ok=True)


__all__ = ["STATE_VERSION", "Generation", "StateStore", "Transaction"]
