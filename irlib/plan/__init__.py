"""One plan per paper: every experiment declared once as data, read by the notebooks, the CLI and the tests.

>>> from irlib import plan
>>> p = plan.build("spn", "full")              # rows, runs, figures of SPN's full reproduction
>>> p.frame().head()                           # the rows it will emit, keyed like the reference CSVs
>>> store = plan.RunStore("reports/full/runs")
>>> plan.execute(p, store, executor="inline")  # trains what the store lacks (or --executor local/slurm)
>>> rows = plan.gather(p, store)               # the tidy rows, beside which the report sets the paper's
"""
from __future__ import annotations

import importlib

from .core import PAPERS, PROFILES, ROW_COLUMNS, Builder, Plan, Profile, gather, get_profile
from .execute import LocalExecutor, execute, pending, submit_plans, summary
from .spec import (Average, EvalSpec, Excluded, FigureSpec, Limits, Measure, Row, RowKey, RunSpec, Source, Study,
                   StudySpec, Term, TestSet)
from .store import RunStore, run_job

__all__ = ["PAPERS", "PROFILES", "ROW_COLUMNS", "Builder", "Plan", "Profile", "gather", "get_profile", "build",
           "build_all", "execute", "pending", "submit_plans", "summary", "LocalExecutor", "RunStore", "run_job",
           "Average", "EvalSpec", "Excluded", "FigureSpec", "Limits", "Measure", "Row", "RowKey", "RunSpec", "Source",
           "Study", "StudySpec", "Term", "TestSet"]


def build(paper: str, profile: str | Profile = "full", seed: int = 0) -> Plan:
    """The plan of ``paper`` (spn, textpromptir, diffloss, dinoir) for ``profile`` (smoke, rehearse, full);
    ``seed`` offsets every run's seed."""
    if paper not in PAPERS:
        raise ValueError(f"paper must be one of {', '.join(PAPERS)}; got {paper!r}")
    return importlib.import_module(f".papers.{paper}", __name__).build(get_profile(profile), seed)


def build_all(profile: str | Profile = "full", papers=PAPERS, seed: int = 0) -> list[Plan]:
    return [build(p, profile, seed) for p in papers]
