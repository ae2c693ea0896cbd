"""The paper registry: one package per paper (``irlib/papers/<key>/``), each declaring its :data:`PAPER` once.

A paper package holds its plan (``plan.py``: every experiment as data), its studies and figures, and registers
its key, title, notebook and reference table here; the CLI, ``reproduce``, the report and the notebooks read
this registry. Adding a fifth paper means adding one package with a ``PAPER`` and a ``plan.build``.

>>> from irlib import papers
>>> papers.PAPERS                                   # ('spn', 'textpromptir', 'diffloss', 'dinoir')
>>> p = papers.build("spn", "full")                 # the Plan: rows, runs, figures
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.core import Plan, Profile


@dataclass(frozen=True)
class Paper:
    """One paper: ``key`` (package and notebook name, the reference rows' ``paper``), ``title`` (report
    heading), ``order`` (position in listings), ``reference`` (its CSV under ``irlib/resources``)."""

    key: str
    title: str
    order: int
    reference: str

    def build(self, profile: "str | Profile" = "full", seed: int = 0, **options) -> "Plan":
        """The plan; ``options`` are the paper's own ``plan.build`` keywords (e.g. DiffLoss's ``protocol``,
        DINO-IR's ``per_sigma``); an unknown one raises ValueError naming the valid ones."""
        from ..engine.core import get_profile

        fn = importlib.import_module(f"{__name__}.{self.key}.plan").build
        valid = self.options()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"{self.key}: unknown plan option(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(valid) or 'none'}")
        return fn(get_profile(profile), seed, **options)

    def options(self) -> list[str]:
        """The names of the plan's options (the keyword-only parameters of its ``plan.build``)."""
        import inspect

        fn = importlib.import_module(f"{__name__}.{self.key}.plan").build
        return [n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY]


@lru_cache(maxsize=1)
def registry() -> dict[str, Paper]:
    """Every paper package's :data:`PAPER`, in listing order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            pkg = importlib.import_module(f"{__name__}.{info.name}")
            paper = getattr(pkg, "PAPER", None)
            if not isinstance(paper, Paper) or paper.key != info.name:
                raise RuntimeError(f"irlib/papers/{info.name}/__init__.py must define PAPER = Paper(key={info.name!r}, ...)")
            found.append(paper)
    return {p.key: p for p in sorted(found, key=lambda p: p.order)}


PAPERS: tuple[str, ...] = tuple(registry())


def get(key: str) -> Paper:
    try:
        return registry()[key]
    except KeyError:
        raise ValueError(f"paper must be one of {', '.join(PAPERS)}; got {key!r}") from None


def build(paper: str, profile: "str | Profile" = "full", seed: int = 0, **options) -> "Plan":
    """The plan of ``paper`` for ``profile`` (smoke, rehearse, full); ``seed`` offsets every run's seed;
    ``options`` are the paper's plan options (see :meth:`Paper.build`)."""
    return get(paper).build(profile, seed, **options)


def build_all(profile: "str | Profile" = "full", papers: tuple[str, ...] = PAPERS, seed: int = 0) -> list["Plan"]:
    return [build(p, profile, seed) for p in papers]


def parse_only(only: "list[str] | tuple[str, ...] | None", extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """``--only`` values (``spn``, ``spn/Table 1``, ``dinoir/Fig. 3b``; ``extra`` names such as a benchmarks
    notebook, which has no tables) -> name -> tables (empty list = all of it). Unknown names raise ValueError
    naming the valid ones; table names are matched case-insensitively against the full plan's."""
    names = PAPERS + tuple(extra)
    if not only:
        return {n: [] for n in names}
    out: dict[str, list[str]] = {}
    for item in only:
        name, _, table = item.partition("/")
        name = name.strip().lower()
        if name not in names:
            raise ValueError(f"--only {item!r}: unknown name {name!r}; choose from {', '.join(names)} "
                             f"(optionally with /<table>, e.g. spn/Table 1)")
        if not table:
            out[name] = []
            continue
        if name not in PAPERS:
            raise ValueError(f"--only {item!r}: {name} has no tables")
        known = build(name, "full").tables()
        match = [t for t in known if t.lower() == table.strip().lower()]
        if not match:
            raise ValueError(f"--only {item!r}: {name} has no {table!r}; it has: {', '.join(known)}")
        if out.get(name) != []:
            out.setdefault(name, []).append(match[0])
    return out
