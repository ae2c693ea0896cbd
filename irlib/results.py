"""The papers' reference numbers and the paired bootstrap.

The tidy rows themselves are produced by the plans (:mod:`irlib.engine`): each notebook writes
``<out_dir>/results.csv`` with the key ``paper, table, method, setting, dataset, metric`` (the reference CSVs'
key; ``dataset`` is the paper's test set, ``measured_on`` what was actually measured) and ``value``, ``n_seeds``,
``n_images``, the paired gain over a baseline with its bootstrap interval, ``profile``, ``weights`` and ``notes``.
"""
from __future__ import annotations

from importlib import resources
from typing import Sequence

import numpy as np
import pandas as pd



def reference(paper: str | None = None) -> pd.DataFrame:
    """The papers' printed numbers (values kept as text, as printed), one row per number."""
    frames = []
    for name in sorted(n.name for n in resources.files("irlib.resources").iterdir() if n.name.endswith(".csv")):
        if paper and name != f"{paper}.csv":
            continue
        with resources.files("irlib.resources").joinpath(name).open() as f:
            frames.append(pd.read_csv(f, dtype=str, keep_default_na=False))
    return pd.concat(frames, ignore_index=True)


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
