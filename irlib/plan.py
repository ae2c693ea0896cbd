"""The plan API in one import, for notebooks and scripts: the paper registry's :func:`build` and the engine's
vocabulary, store and executors (``irlib.papers`` and ``irlib.engine`` are their homes).

>>> from irlib import plan
>>> p = plan.build("spn", "full")
>>> plan.execute(p, plan.RunStore("reports/full/runs"), plan.Context(data_root="data", store="reports/full/runs"))
"""
from __future__ import annotations

from .engine import *  # noqa: F401,F403
from .engine import __all__ as _engine_all
from .papers import PAPERS, build, build_all, parse_only, registry  # noqa: F401

__all__ = [*_engine_all, "PAPERS", "build", "build_all", "parse_only", "registry"]
