"""Tidy result rows, the paper's reference numbers, and the paired bootstrap.

Every notebook appends rows with :class:`Results` and writes ``<out_dir>/results.csv``. Columns:
``paper, table, method, setting, dataset, paper_dataset, metric, value, n_seeds, ci_low, ci_high,
profile, weights, notes``. ``dataset`` is what was measured; ``paper_dataset`` is the paper's test set the
row stands in for (the report joins on it). ``weights`` is ``pretrained`` or ``random``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

COLUMNS = ["paper", "table", "method", "setting", "dataset", "paper_dataset", "metric", "value", "n_seeds",
           "ci_low", "ci_high", "profile", "weights", "notes"]
KEY = ["paper", "table", "method", "setting", "paper_dataset", "metric"]

SMOKE_BANNER = ("SMOKE PROFILE — random-initialised backbones (no VGG/DINOv2/BERT/ADM weights; only the MiniLM text "
                "encoder is really pretrained), tiny models, "
                "offline sample photos, a few dozen steps. These numbers check that the pipeline runs; they are "
                "NOT comparable with the paper's.")


def reference(paper: str | None = None) -> pd.DataFrame:
    """The papers' printed numbers (values kept as text, as printed), one row per number."""
    frames = []
    for name in ("spn", "textpromptir", "diffloss", "dinoir"):
        if paper and name != paper:
            continue
        with resources.files("irlib.resources").joinpath(f"{name}.csv").open() as f:
            frames.append(pd.read_csv(f, dtype=str, keep_default_na=False))
    return pd.concat(frames, ignore_index=True)


@dataclass
class Results:
    """Collects tidy rows for one notebook run."""

    paper: str
    profile: str
    weights: str
    out_dir: str | Path
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)  # figures are saved there before the rows

    def add(self, table: str, method: str, metric: str, value: float, *, setting: str = "", dataset: str = "",
            paper_dataset: str = "", n_seeds: int = 1, ci_low: float | None = None, ci_high: float | None = None,
            notes: str = "") -> None:
        self.rows.append({"paper": self.paper, "table": table, "method": method, "setting": setting,
                          "dataset": dataset, "paper_dataset": paper_dataset or dataset, "metric": metric,
                          "value": float(value) if value is not None else np.nan, "n_seeds": n_seeds,
                          "ci_low": ci_low, "ci_high": ci_high, "profile": self.profile, "weights": self.weights,
                          "notes": notes})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def save(self) -> Path:
        """Write ``results.csv`` atomically and return its path."""
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "results.csv.partial"
        self.frame().to_csv(tmp, index=False)
        os.replace(tmp, out / "results.csv")
        return out / "results.csv"

    def show(self, paper_side: bool = True) -> pd.DataFrame:
        """The rows beside the paper's numbers; prints the smoke banner first when it applies."""
        if self.profile == "smoke" or self.weights == "random":
            print(SMOKE_BANNER)
        df = self.frame()
        return compare(df) if paper_side else df


def compare(df: pd.DataFrame) -> pd.DataFrame:
    """Join reproduced rows with the paper's on (paper, table, method, setting, paper_dataset, metric)."""
    ref = reference().rename(columns={"dataset": "paper_dataset", "value": "paper_value", "notes": "paper_notes"})
    ref["paper_value"] = pd.to_numeric(ref["paper_value"], errors="coerce")
    df = df.copy()
    df["setting"] = df["setting"].fillna("")
    out = df.merge(ref, on=KEY, how="left")
    out["delta"] = out["value"] - out["paper_value"]
    return out


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n: int = 10000, ci: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a and its percentile bootstrap CI, resampling the pairs (e.g. per-image PSNRs of the
    baseline ``a`` and the variant ``b`` on the same images and seeds)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired bootstrap needs two non-empty arrays of the same length")
    d = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n, d.size))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(d.mean()), float(lo), float(hi)
