"""A selection of runs (``irlib reproduce --only-runs FILE``, the file ``irlib plan --budget`` writes): which run
keys it names, and a plan cut down to what those runs (and the runs they depend on) compute.

The file holds one run key per line; ``#`` starts a comment and blank lines are ignored. A plan restricted to a
selection (:func:`restrict`) keeps every row whose runs, baselines, dependencies, study dependencies and average
parts are all selected, every study whose dependency runs are (a study that needs no run is kept, as the budget
planner counts it covered), and every figure whose runs and studies are and whose source tables are kept whole.
The rows it leaves out are returned as a plan of their own: the notebook shows them as "not run in this
selection", never as failures.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

from .core import Plan
from .cost import _with_deps, row_run_keys
from .spec import RunSpec

NOT_SELECTED = "skipped: not run in this selection (irlib reproduce --only-runs)"
"""The note of a row left out by a selection (the report lists notes starting with ``skipped`` as skipped cells)."""


class SelectionError(ValueError):
    """A selection file that is missing, empty or names keys no selected plan has."""


def read_selection(path: str | Path) -> list[str]:
    """The run keys listed in ``path`` (in order, each once): text after ``#`` and blank lines are ignored.
    Raises :class:`SelectionError` when the file is missing or unreadable, when it lists no key, or when a line
    holds more than one word."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SelectionError(f"--only-runs {path}: no such file (write one with irlib plan --budget HOURS "
                             f"--select-out FILE, one run key per line)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SelectionError(f"--only-runs {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    keys: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 1:
            raise SelectionError(f"--only-runs {path}, line {n}: expected one run key, got {line.strip()!r}")
        if words[0] not in keys:
            keys.append(words[0])
    if not keys:
        raise SelectionError(f"--only-runs {path}: lists no run key (only comments or blank lines)")
    return keys


def closure(plans: Iterable[Plan], keys: Iterable[str]) -> set[str]:
    """``keys`` plus every run the runs they name depend on (pretrained negatives, history models), recursively,
    as found in ``plans``."""
    by_key: dict[str, RunSpec] = {r.key(): r for p in plans for r in p.runs()}
    return set(keys) | _with_deps(by_key[k] for k in keys if k in by_key)


def restrict(plan: Plan, keys: Iterable[str]) -> tuple[Plan, Plan]:
    """(what ``plan`` computes from the runs ``keys`` and their dependencies, the rows and figures it leaves out)."""
    have = closure([plan], keys)
    by_key = {r.key: r for r in plan.rows}
    rows, left = [], []
    for row in plan.rows:
        (rows if row_run_keys(row, by_key) <= have else left).append(row)
    kept_tables = {r.key.table for r in rows}
    dropped_tables = {r.key.table for r in left}
    figures, figs_left = [], []
    for f in plan.figures:
        need = _with_deps(f.runs) | _with_deps(r for s in f.studies for r in s.deps)
        kw = dict(f.kw)
        tables = ([kw["table"]] if "table" in kw else []) + list(kw.get("tables", ()))
        whole = all(t in kept_tables and t not in dropped_tables for t in tables)
        (figures if need <= have and whole else figs_left).append(f)
    kept = dataclasses.replace(plan, rows=rows, figures=figures)
    return kept, dataclasses.replace(plan, rows=left, figures=figs_left, excluded=[], cited={}, sources={})


def computes_anything(plan: Plan) -> bool:
    """Whether a restricted plan still trains a run of the selection (a plan left with only studies that need no
    run is not worth a notebook under ``--only-runs``)."""
    return bool(plan.runs())
