"""The engine between the papers and the networks: plan specs, profiles, the run store, job execution and its
executors (inline, local workers, Slurm), preflight and cost. It knows no paper: the paper packages
(:mod:`irlib.papers`) declare their plans with its vocabulary.

>>> from irlib import engine, papers
>>> p = papers.build("spn", "full")
>>> store = engine.RunStore("reports/full/runs")
>>> engine.execute(p, store, engine.Context(data_root="/data", store="reports/full/runs"))   # trains what the store lacks
>>> rows = engine.gather(p, store)
"""
from __future__ import annotations

from .core import PROFILES, ROW_COLUMNS, Builder, Plan, Profile, gather, get_profile
from .context import Context
from .execute import EXECUTORS, Executor, LocalExecutor, execute, make_executor, pending, submit_plans, summary
from .spec import (Average, EvalSpec, Excluded, FigureSpec, Limits, Measure, Row, RowKey, RunSpec, Source, Study,
                   StudySpec, Term, TestSet)
from .store import RunStore


def __getattr__(name: str):
    if name == "run_job":   # torch and the networks load only when a job is run
        from .jobs import run_job

        return run_job
    raise AttributeError(f"module 'irlib.engine' has no attribute {name!r}")

__all__ = ["PROFILES", "ROW_COLUMNS", "Builder", "Plan", "Profile", "gather", "get_profile", "Context", "EXECUTORS", "Executor", "make_executor", "execute",
           "pending", "submit_plans", "summary", "LocalExecutor", "RunStore", "run_job", "Average", "EvalSpec",
           "Excluded", "FigureSpec", "Limits", "Measure", "Row", "RowKey", "RunSpec", "Source", "Study", "StudySpec",
           "Term", "TestSet"]
