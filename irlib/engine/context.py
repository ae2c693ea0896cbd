"""The execution context of a job: where its data and run store are and which local weight files it uses.

Required, typed and recorded in each job's ``job.json``: a job never falls back to a default data folder. A job
record without a data root is refused with the file's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ContextError(ValueError):
    """A job's recorded execution context is missing or malformed."""


@dataclass(frozen=True)
class Context:
    """``data_root``: the folder holding the datasets in their manifests' layouts; ``store``: the run store's
    root; ``files``: local weight files by feature-network name (``vgg19``, ``dinov2``, ``adm``, ...)."""

    data_root: Path
    store: Path
    files: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not str(self.data_root):
            raise ContextError("Context.data_root is required (the folder holding the datasets)")
        object.__setattr__(self, "data_root", Path(self.data_root).resolve())
        object.__setattr__(self, "store", Path(self.store).resolve())
        object.__setattr__(self, "files", dict(self.files or {}))

    def to_json(self) -> dict[str, Any]:
        return {"data_root": str(self.data_root), "store": str(self.store), "files": dict(self.files)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None, where: str | Path = "job.json") -> "Context":
        if not isinstance(d, Mapping) or not d.get("data_root") or not d.get("store"):
            raise ContextError(f"{where}: no execution context (data_root, store) recorded; submit the job again "
                               f"(irlib reproduce, or engine.execute with a Context)")
        return cls(Path(d["data_root"]), Path(d["store"]), dict(d.get("files") or {}))
