"""Profiles, the :class:`Plan` of one paper, the :class:`Builder` the paper modules declare their experiments
with, and :func:`gather`, which turns a run store into the paper's tidy rows."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import CorruptFile
from ..results import paired_bootstrap
from ..schedules import Schedule
from .preflight import needed_data
from .spec import (CROPS, KEY_COLUMNS, PRECISIONS, SOURCE_NOT_STATED, Average, EvalSpec, Excluded, FigureSpec, Limits, Measure, Row,
                   RowKey, RunSpec, Source, Study, StudySpec, Term, TestSet, freeze)

ROW_COLUMNS = ["paper", "table", "method", "setting", "dataset", "metric", "value", "measured_on", "n_seeds",
               "n_images", "baseline", "gain", "gain_ci_low", "gain_ci_high", "profile", "weights", "notes", "runs"]


@dataclass(frozen=True)
class Profile:
    """``smoke``: tiny networks, the offline photos, random feature networks, a few dozen steps (CPU minutes).
    ``rehearse``: the full plan — same rows, networks, schedules, loaders and conventions — on synthetic images
    in the real folder layouts (``irlib data synth``), capped by ``limits`` (2 steps, 2 test images), random
    weights. ``full``: the papers' settings, pretrained feature networks, the benchmarks under ``data_root``."""

    name: str
    size: str
    weights: str
    limits: Limits | None = None
    smoke_schedule: Schedule | None = None
    seeds: int = 1
    text_encoder: str = ""
    scale: str = "paper"
    banner: str = ""

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"Profile.scale must be one of {SCALES}, got {self.scale!r}")
        if (self.scale == "capped") != (self.limits is not None):
            raise ValueError("a 'capped' profile needs limits, and only it has them")

    @property
    def offline(self) -> bool:
        """Tiny-scale plans read the offline photos instead of the benchmarks."""
        return self.scale == "tiny"

    @property
    def measured_on(self) -> str:
        return {"tiny": "offline-photos", "capped": "synthetic (irlib data synth)"}.get(self.scale, "")


SCALES = ("tiny", "capped", "paper")
"""What a profile's plans are sized for: ``tiny`` networks and data (smoke), the paper's networks with
``capped`` steps and images (rehearse), or the ``paper``'s own scale (full). Plans read ``P.scale``, never a
profile's name."""

PROFILES = {
    "smoke": Profile(
        "smoke", "tiny", "random", smoke_schedule=Schedule(24, 4, 32, 1e-3, grad_clip=1.0), seeds=1, text_encoder="",
        scale="tiny",
        banner=("SMOKE PROFILE — random-initialised backbones (no VGG/DINOv2/BERT/ADM weights; only the MiniLM text "
                "encoder is really pretrained), tiny models, offline sample photos, a few dozen steps. These numbers "
                "check that the pipeline runs; they are NOT comparable with the paper's.")),
    "rehearse": Profile(
        "rehearse", "full", "random", limits=Limits(), text_encoder="task-bert:bert-base-uncased", scale="capped",
        banner=("REHEARSE PROFILE — the full plan run on synthetic data in the real folder layouts: 2 training "
                "steps, 2 images per test set, random-initialised weights. These numbers check that every job, "
                "checkpoint and evaluation runs; they are NOT comparable with the paper's.")),
    "full": Profile("full", "full", "pretrained", text_encoder="task-bert:bert-base-uncased"),
}


def get_profile(name: str | Profile) -> Profile:
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {name!r}")
    return PROFILES[name]


@dataclass
class Plan:
    """Everything one paper's notebook produces: rows (with how each is obtained), figures, and the reference
    rows it does not reproduce (with the reason)."""

    paper: str
    profile: Profile
    rows: list[Row] = field(default_factory=list)
    figures: list[FigureSpec] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    cited: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)   # table -> (methods, why)
    sources: dict[tuple[str, str], str] = field(default_factory=dict)   # (table, cited method) -> where it is from

    # ------------------------------------------------------------------ derived views
    def runs(self) -> list[RunSpec]:
        """Every distinct run, dependencies first."""
        seen: dict[str, RunSpec] = {}

        def add(r: RunSpec) -> None:
            for d in r.deps():
                add(d)
            seen.setdefault(r.key(), r)

        for row in self.rows:
            if isinstance(row.source, Measure):
                for r in row.source.runs + row.source.baseline:
                    add(r)
            elif isinstance(row.source, Study):
                for r in row.source.study.deps:
                    add(r)
            else:
                for p in row.source.parts:
                    if not isinstance(p, RowKey):
                        for r in p[0].runs + p[0].baseline:
                            add(r)
        for f in self.figures:
            for r in f.runs:
                add(r)
            for s in f.studies:
                for r in s.deps:
                    add(r)
        return list(seen.values())

    def studies(self) -> list[StudySpec]:
        out: dict[str, StudySpec] = {}
        for row in self.rows:
            if isinstance(row.source, Study):
                out.setdefault(row.source.study.key(), row.source.study)
        for f in self.figures:
            for s in f.studies:
                out.setdefault(s.key(), s)
        return list(out.values())

    def measures(self) -> list[Measure]:
        out = []
        for row in self.rows:
            if isinstance(row.source, Measure):
                out.append(row.source)
            elif isinstance(row.source, Average):
                out += [p[0] for p in row.source.parts if not isinstance(p, RowKey)]
        return out

    def evals(self) -> dict[str, list[EvalSpec]]:
        """Run key -> the evaluations the rows ask of it."""
        out: dict[str, list[EvalSpec]] = {}
        for m in self.measures():
            for r in m.runs + m.baseline:
                lst = out.setdefault(r.key(), [])
                if m.eval not in lst:
                    lst.append(m.eval)
        return out

    def datasets(self) -> list[str]:
        """Data references (``manifest:split``) the plan reads: runs, evaluations, studies and figures."""
        return sorted(needed_data([self]))

    def select(self, tables: Sequence[str] | None) -> "Plan":
        """Only the rows/figures of the given tables (``"Table 1"``, ``"Fig. 4"``)."""
        if not tables:
            return self
        want = {t.lower() for t in tables}
        for f in self.figures:   # a figure drawn from tables' rows brings those rows along (SPN Fig. 2, DINO-IR Fig. 1a)
            if f.figure.lower() in want:
                kw = dict(f.kw)
                named = ([kw["table"]] if "table" in kw else []) + list(kw.get("tables", ()))
                want |= {t.lower() for t in named}
        return dataclasses.replace(
            self, rows=[r for r in self.rows if r.key.table.lower() in want],
            figures=[f for f in self.figures if f.figure.lower() in want],
            excluded=[e for e in self.excluded if e.key.table.lower() in want],
            cited={t: v for t, v in self.cited.items() if t.lower() in want},
            sources={k: v for k, v in self.sources.items() if k[0].lower() in want})

    def without_data(self, refs: Iterable[str]) -> tuple["Plan", dict[str, str]]:
        """This plan minus the tables/figures that read a dataset in ``refs`` (missing ones), and
        ``{table: reason}`` for what was dropped (the notebook records those rows as skipped)."""
        refs = set(refs)
        if not refs:
            return self, {}
        why: dict[str, str] = {}
        for ref, users in needed_data([self]).items():
            if ref in refs:
                for u in users:
                    t = u.split(" ", 1)[1]
                    why[t] = f"{why[t]}, {ref}" if t in why else f"skipped: missing dataset {ref}"
        return dataclasses.replace(self, rows=[r for r in self.rows if r.key.table not in why],
                                   figures=[f for f in self.figures if f.figure not in why]), why

    def frame(self) -> pd.DataFrame:
        """One line per planned row: its reference key, how it is obtained, and the runs behind it."""
        out = []
        for row in self.rows:
            src = row.source
            kind = type(src).__name__.lower()
            runs = (src.runs if isinstance(src, Measure) else ())
            out.append({**row.key.as_dict(), "source": kind, "n_runs": len(runs), "extra": row.extra, "kind": row.kind,
                        "notes": row.notes})
        return pd.DataFrame(out, columns=[*KEY_COLUMNS, "source", "n_runs", "extra", "kind", "notes"])

    def row_classes(self, reference: pd.DataFrame) -> pd.DataFrame:
        """Every reference row of this paper with its ``class`` (:data:`~irlib.engine.spec.ROW_CLASSES`: ``own``,
        ``comparison`` or ``cited``), its ``status`` (``planned``, ``excluded``, ``cited`` or ``unaccounted``)
        and, for cited rows, the ``source`` the paper names (or "source not stated")."""
        planned = {tuple(r.key.as_dict().values()): r.kind for r in self.rows if not r.extra}
        excluded = {tuple(e.key.as_dict().values()): e.kind for e in self.excluded}
        out = []
        for key in map(tuple, reference[list(KEY_COLUMNS)].values):
            table, method = key[1], key[2]
            if key in planned:
                cls, status, src = planned[key], "planned", ""
            elif key in excluded:
                cls, status, src = excluded[key], "excluded", ""
            elif method in self.cited.get(table, ((), ""))[0]:
                cls, status, src = "cited", "cited", self.sources.get((table, method), SOURCE_NOT_STATED)
            else:
                cls, status, src = "", "unaccounted", ""
            out.append({**dict(zip(KEY_COLUMNS, key)), "class": cls, "status": status, "cited_from": src})
        return pd.DataFrame(out, columns=[*KEY_COLUMNS, "class", "status", "cited_from"])

    def tables(self) -> list[str]:
        return list(dict.fromkeys([r.key.table for r in self.rows] + [f.figure for f in self.figures]))


class Builder:
    """The vocabulary a paper module declares its plan with (profile-aware): runs over seeds, measured rows,
    average columns, studies and figures. In the smoke profile every data reference becomes the offline
    photos and every schedule the profile's short one; in the rehearsal the runs carry the caps."""

    def __init__(self, paper: str, profile: Profile | str, seed: int = 0):
        self.P = get_profile(profile)
        self.plan = Plan(paper, self.P)
        self.paper, self.base_seed = paper, seed
        self.kind = "own"   # the class of rows being declared (see comparisons())

    # ------------------------------------------------------------------ specs
    def data(self, ref: str) -> str:
        return "offline" if self.P.offline else ref

    def testset(self, ref: str, task: str = "", seed: int = 1234, synth: str = "") -> TestSet:
        return TestSet(self.data(ref), task, seed, self.P.limits.images if self.P.limits else None, synth=synth)

    def schedule(self, s: Schedule) -> Schedule:
        return self.P.smoke_schedule if self.P.smoke_schedule is not None else s

    def run(self, net: str, *, train: Sequence[tuple[str, str]], schedule: Schedule, terms: Sequence[Term] = (),
            net_kw: dict | None = None, forward: str = "", label: str = "", select: dict | None = None,
            seed: int = 0, text_encoder: str | None = None, augment: str = "", synth: str = "",
            declared: dict[str, str] | None = None, precision: str = "fp32", crop: str = "") -> RunSpec:
        """A run of ``net`` (seed ``seed``); ``train`` is ``[(data reference, task), …]``, optionally
        ``(data reference, task, subset size, weight)``: a fixed random subset of a large set, and the source's
        share of the batches when several are mixed. ``augment`` (:data:`irlib.data.datasets.AUGMENTS`) and
        ``synth`` (how synthetic noise is stored, for the noise sources) are recipe options; ``declared`` maps a recipe dimension
        where the plan departs from the release on purpose to the reason (see :mod:`irlib.engine.recipe`);
        ``precision`` (:data:`irlib.engine.spec.PRECISIONS`) the training arithmetic; ``crop``
        (:data:`irlib.engine.spec.CROPS`) how training patches are cut."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        sched = self.schedule(schedule)
        rec = (Term(sched.rec),) if not any(t.name == sched.rec for t in terms) else ()
        return RunSpec(
            paper=self.paper, net=net, terms=rec + tuple(terms),
            train=tuple(Source(self.data(d[0]), d[1], None if self.P.offline or len(d) < 3 else d[2],
                               d[3] if len(d) > 3 else None, synth=synth if d[1].startswith("noise") else "")
                  for d in train),
            schedule=sched, seed=self.base_seed + seed, net_kw=freeze(net_kw), size=self.P.size, weights=self.P.weights,
            forward=forward, text_encoder=(self.P.text_encoder if text_encoder is None else text_encoder) if forward == "text" else "",
            select=freeze(select), limits=self.P.limits, label=label or net, augment=augment,
            declared=tuple(sorted((declared or {}).items())), precision=precision, crop=crop)

    def seeds(self, run: RunSpec, n: int | None = None) -> tuple[RunSpec, ...]:
        """``run`` replicated over the profile's seeds (or ``n``)."""
        return tuple(run.replace(seed=run.seed + s) for s in range(n or self.P.seeds))

    # ------------------------------------------------------------------ rows
    def measure(self, table: str, method: str, setting: str, dataset: str, runs: Sequence[RunSpec] | RunSpec,
                ev: EvalSpec, metrics: Sequence[str] = ("PSNR", "SSIM"), baseline: Sequence[RunSpec] = (),
                baseline_label: str = "", notes: str = "", extra: bool = False) -> list[RowKey]:
        """Rows measured from ``runs`` on ``ev`` (one per metric); ``extra``: a number the paper shows only as a
        figure (no reference value)."""
        runs = (runs,) if isinstance(runs, RunSpec) else tuple(runs)
        if baseline and len(baseline) != len(runs):
            raise ValueError(f"{table} {method}: baseline and variant need the same seeds")
        keys = []
        for m in metrics:
            k = RowKey(self.paper, table, method, setting, dataset, m)
            self._add(Row(k, Measure(runs, ev, tuple(baseline), baseline_label), notes, extra))
            keys.append(k)
        return keys

    def average(self, table: str, method: str, setting: str, datasets: Sequence[str], metrics: Sequence[str] = ("PSNR", "SSIM"),
                part_settings: Sequence[str] | None = None, notes: str = "", part_table: str | None = None,
                part_method: str | None = None) -> None:
        """``Avg`` rows: the mean of this method's rows on ``datasets`` (with ``part_settings`` when the parts
        carry a different setting per column, e.g. TextPromptIR's noise levels; ``part_table``/``part_method``
        when the parts are rows of another table)."""
        for m in metrics:
            parts = tuple(RowKey(self.paper, part_table or table, part_method or method, s, d, m)
                          for d, s in zip(datasets, part_settings or [setting] * len(datasets)))
            self._add(Row(RowKey(self.paper, table, method, setting, "Avg", m), Average(parts), notes))

    def average_of(self, table: str, method: str, setting: str, measures: Sequence[Measure], metric: str,
                   notes: str = "") -> None:
        """An ``Avg`` row over measurements that are not rows themselves."""
        self._add(Row(RowKey(self.paper, table, method, setting, "Avg", metric),
                      Average(tuple((m, metric) for m in measures)), notes))

    def study(self, name: str, fn: str, deps: Sequence[RunSpec] = (), **kw: Any) -> StudySpec:
        return StudySpec(self.paper, name, fn, freeze(kw), tuple(deps), self.P.weights, self.P.size, self.P.limits)

    def study_row(self, spec: StudySpec, table: str, method: str, setting: str, dataset: str, metric: str,
                  notes: str = "", extra: bool = False) -> None:
        """A row read from a study's result (``extra=True``: a number the paper shows only in a figure or in
        words, emitted beside the reproduced ones without a reference value)."""
        self._add(Row(RowKey(self.paper, table, method, setting, dataset, metric), Study(spec), notes, extra))

    def figure(self, figure: str, title: str, fn: str, runs: Sequence[RunSpec] = (), studies: Sequence[StudySpec] = (),
               testset: TestSet | None = None, **kw: Any) -> None:
        self.plan.figures.append(FigureSpec(self.paper, figure, title, fn, freeze(kw), tuple(runs), tuple(studies), testset))

    def exclude(self, table: str, method: str, setting: str, dataset: str, metric: str, reason: str) -> None:
        self.plan.excluded.append(Excluded(RowKey(self.paper, table, method, setting, dataset, metric), reason,
                                           self.kind))

    @contextlib.contextmanager
    def comparisons(self) -> Iterator[None]:
        """Rows declared inside are ``comparison`` rows: other methods the authors trained and evaluated in
        their own setting (numbers the paper measured, so planned like its own, but a class of their own)."""
        self.kind = "comparison"
        try:
            yield
        finally:
            self.kind = "own"

    def cite(self, table: str, methods: Sequence[str], reason: str, source: str | Mapping[str, str] = "") -> None:
        """Rows of ``table`` the paper copies from other work (not its own experiments): not reproduced; the
        report shows the paper's number alone. ``source``: where the paper says the numbers come from (one
        text for all ``methods`` or one per method); empty = :data:`~irlib.engine.spec.SOURCE_NOT_STATED`."""
        self.plan.cited[table] = (tuple(self.plan.cited.get(table, ((), ""))[0]) + tuple(methods), reason)
        for m in methods:
            src = source.get(m, "") if isinstance(source, Mapping) else source
            self.plan.sources[(table, m)] = src or SOURCE_NOT_STATED

    def _add(self, row: Row) -> None:
        if any(r.key == row.key for r in self.plan.rows):
            raise ValueError(f"row planned twice: {row.key}")
        if row.kind != self.kind:
            row = dataclasses.replace(row, kind=self.kind)
        self.plan.rows.append(row)


# ---------------------------------------------------------------------------------------------- gather
def gather(plan: Plan, store) -> pd.DataFrame:
    """The plan's rows as tidy rows (:data:`ROW_COLUMNS`) from what the run store holds. A row whose runs are
    not finished gets no value and a note saying so; a collapsed run's rows say where it collapsed."""
    values: dict[RowKey, float] = {}
    recs: list[dict] = []
    for row in plan.rows:
        rec = {**row.key.as_dict(), "value": np.nan, "measured_on": "", "n_seeds": 0, "n_images": 0, "baseline": "",
               "gain": np.nan, "gain_ci_low": np.nan, "gain_ci_high": np.nan, "profile": plan.profile.name,
               "weights": plan.profile.weights, "notes": row.notes, "runs": ""}
        if isinstance(row.source, Measure):
            _measured(rec, row.key.metric, row.source, store, plan.profile, paired_bootstrap)
        elif isinstance(row.source, Study):
            _studied(rec, row, row.source, store, plan.profile)
        values[row.key] = rec["value"]
        recs.append(rec)
    for row, rec in zip(plan.rows, recs):  # averages last: their parts may be rows of later tables
        if not isinstance(row.source, Average):
            continue
        vals, names = [], []
        for p in row.source.parts:
            if isinstance(p, RowKey):
                vals.append(values.get(p, np.nan))
                names.append(p.dataset)
            else:
                part = {"value": np.nan, "notes": ""}
                _measured(part, p[1], p[0], store, plan.profile, paired_bootstrap)
                vals.append(part["value"])
                names.append(p[0].eval.testset.dataset)
        rec["value"] = float(np.mean(vals)) if vals and not any(math.isnan(v) for v in vals) else np.nan
        rec["measured_on"] = plan.profile.measured_on or "mean of " + ", ".join(names)
        if math.isnan(rec["value"]):
            rec["notes"] = _join(rec["notes"], "average needs every part: some are missing")
    return pd.DataFrame(recs, columns=ROW_COLUMNS)


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def _measured(rec: dict, metric: str, src: Measure, store, profile: Profile, paired_bootstrap) -> None:
    rec["measured_on"] = profile.measured_on or src.eval.testset.dataset
    rec["runs"] = " ".join(r.key() for r in src.runs)
    declared = sorted({dim for r in src.runs for dim, _ in r.declared})
    if declared:   # the run's recipe differs from its release's there, by a declared choice (irlib plan --runs)
        rec["notes"] = _join(rec["notes"], f"recipe differs from the release in: {', '.join(declared)} (declared)")
    per_seed, images, problems = [], [], []
    for r in src.runs:
        res, why = _result(store, r, src.eval)
        if res is None:
            problems.append(why)
            continue
        if res.get("collapsed"):
            problems.append(f"collapsed during training (step {store.done(r.key()).get('collapse_step')})")
            continue
        if metric in res["per_image"]:
            arr = res["per_image"][metric]
            per_seed.append(float(np.mean(arr)))
            images.append(arr)
        elif metric in res["dataset"]:
            per_seed.append(float(res["dataset"][metric]))
        else:
            problems.append(f"{metric} was not measured")
    rec["n_seeds"] = len(per_seed)
    rec["n_images"] = len(images[0]) if images else 0
    if problems:
        rec["notes"] = _join(rec["notes"], "; ".join(sorted(set(problems))))
    if per_seed and not problems:
        rec["value"] = float(np.mean(per_seed))
    if src.baseline and images and not problems:
        base = []
        for r in src.baseline:
            res, _ = _result(store, r, src.eval)
            if res is None or res.get("collapsed") or metric not in res["per_image"]:
                return
            base.append(res["per_image"][metric])
        a, b = np.concatenate(base), np.concatenate(images)
        if a.shape == b.shape and a.size > 1:
            d, lo, hi = paired_bootstrap(a, b)
            rec.update(baseline=src.baseline_label, gain=d, gain_ci_low=lo, gain_ci_high=hi)


def _result(store, run: RunSpec, ev: EvalSpec) -> tuple[dict | None, str]:
    key = run.key()
    if store.done(key) is not None:
        res = store.eval_result(key, ev)
        if res is not None:
            return res, ""
    try:
        state = store.state(key)
    except (CorruptFile, FileNotFoundError) as e:   # a damaged or missing job record: named, not a traceback
        return None, f"run {key}: {e}"
    if state == "failed":
        return None, f"run {key} failed: {(store.error(key) or '')[:200]}"
    if store.done(key) is not None:
        return None, f"run {key} not evaluated on {ev.testset.dataset}"
    return None, f"run {key} not finished ({state})"


def _studied(rec: dict, row: Row, src: Study, store, profile: Profile) -> None:
    key = src.study.key()
    rec["runs"] = key
    rec["measured_on"] = profile.measured_on or "study"
    df = store.study_result(key)
    if df is None:
        rec["notes"] = _join(rec["notes"], f"study {src.study.name} not finished ({store.state(key)})")
        return
    k = row.key
    sel = df[(df.table == k.table) & (df.method == k.method) & (df.setting.fillna("") == k.setting)
             & (df.dataset.fillna("") == k.dataset) & (df.metric == k.metric)]
    if len(sel) != 1:
        rec["notes"] = _join(rec["notes"], f"study {src.study.name} returned {len(sel)} rows for this key")
        return
    rec["value"] = float(sel.value.iloc[0])
    for c in ("n_images", "notes"):
        if c in sel and not pd.isna(sel[c].iloc[0]) and sel[c].iloc[0] != "":
            rec[c] = sel[c].iloc[0] if c == "n_images" else _join(rec["notes"], str(sel[c].iloc[0]))
