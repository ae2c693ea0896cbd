"""What a paper notebook calls: build the plan, run what the store lacks, gather the rows, show each table in
the paper's layout, draw the figures. Kept here so the notebooks stay thin."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from .engine.core import Plan, gather
from .io import atomic_write_text
from .engine.store import RunStore

@dataclass
class Session:
    """One notebook's reproduction of one paper."""

    plan: Plan
    store: RunStore
    out_dir: Path
    device: str = "cpu"
    data_root: str = "data"
    files: dict = field(default_factory=dict)
    rows: pd.DataFrame | None = None
    full_plan: Plan | None = None
    skipped: dict = field(default_factory=dict)   # table -> why (missing data, from --skip-missing)
    unselected: Plan | None = None   # rows and figures --only-runs leaves out (shown as not run, never failed)

    def banner(self) -> str:
        return self.plan.profile.banner

    def run(self, executor: str = "inline", **kw) -> pd.DataFrame:
        """Train and evaluate what the store lacks (all finished already when ``irlib reproduce`` ran the jobs
        through the local or Slurm executor); then gather the rows and write ``results.csv``."""
        from .engine.context import Context
        from .engine.execute import execute

        status = execute(self.plan, self.store, Context(self.data_root, self.store.root, self.files),
                         executor=executor, device=self.device, **kw)
        self.gather()
        return status

    def gather(self) -> pd.DataFrame:
        self.rows = gather(self.plan, self.store)
        if self.skipped:
            skipped = gather(self.full_plan.select(list(self.skipped)), self.store)
            skipped["value"] = float("nan")
            skipped["notes"] = skipped.table.map(self.skipped)
            self.rows = pd.concat([self.rows, skipped], ignore_index=True)
        if self.unselected is not None and self.unselected.rows:
            from .engine.selection import NOT_SELECTED

            self.rows = pd.concat([self.rows, not_run(self.unselected, NOT_SELECTED)], ignore_index=True)
        atomic_write_text(self.out_dir / "results.csv", self.rows.to_csv(index=False))
        return self.rows

    def table(self, table: str) -> list[pd.DataFrame]:
        """Table ``table`` in the paper's layout: cells ``reproduced / paper (Δ)``, one frame per block."""
        from .report import build_table
        from .results import reference

        if self.rows is None:
            self.gather()
        banner = self.banner()
        if banner:
            print(banner)
        ref = reference(self.plan.paper)
        ref = ref[ref.table == table]
        rep = self.rows[self.rows.table == table].fillna({"notes": "", "baseline": "", "setting": ""})
        view = build_table(self.plan.paper, table, ref, rep)
        frames = []
        for b in view.blocks:
            cols = pd.MultiIndex.from_tuples([(g or "", m) for g, ms in b.groups for m in ms])
            idx = pd.MultiIndex.from_tuples(b.rows, names=["method", "setting"])
            frames.append(pd.DataFrame([[c.text for c in line] for line in b.cells], index=idx, columns=cols))
        for n, text in enumerate(view.footnotes, 1):
            print(f"[{n}] {text}")
        return frames

    def overview(self) -> pd.Series:
        """Print the profile's banner (``full profile`` when there is none); the planned rows per table."""
        print(self.banner() or "full profile")
        if self.unselected is not None:
            print(f"--only-runs: {len(self.plan.runs())} runs, {len(self.plan.rows)} rows, {len(self.plan.figures)} "
                  f"figures kept; {len(self.unselected.rows)} rows and {len(self.unselected.figures)} figures not run "
                  f"in this selection")
        return self.plan.frame().groupby("table").size().rename("rows planned")

    def show(self, *tables: str) -> None:
        """Display tables in the paper's layout (in a notebook; printed elsewhere)."""
        for t in tables:
            for frame in self.table(t):
                _display(frame)

    def show_figures(self, only: Sequence[str] | None = None) -> None:
        """Draw the planned figures (:meth:`figures`) and display each (in a notebook; its path elsewhere)."""
        try:
            from IPython.display import Image
        except ImportError:  # pragma: no cover - IPython comes with jupyterlab
            Image = None
        for path in self.figures(only):
            _display(Image(filename=str(path)) if Image else path)

    def gains(self, tables: Sequence[str] | None = None) -> pd.DataFrame:
        """Variant-vs-baseline gains with their paired-bootstrap 95% intervals (differences, not values)."""
        r = self.rows if self.rows is not None else self.gather()
        d = r[(r.baseline.fillna("") != "") & r.gain.notna()]
        if tables:
            d = d[d.table.isin(tables)]
        return d[["table", "method", "baseline", "setting", "dataset", "metric", "gain", "gain_ci_low", "gain_ci_high"]]

    def released(self, weights_root: str | Path | None = None, limit: int | None = None) -> pd.DataFrame:
        """The authors' released checkpoints of this paper's baselines (``data_manifests/weights``): where each
        stands in the paper, whether it is here, and — for those that are — their rows on the paper's test sets
        (``weights=released``, measured exactly like the retrained rows; added to ``results.csv``)."""
        from .released import evaluate_released, released_evals
        from .weights import list_weights, weights_status

        root = Path(weights_root) if weights_root else Path(self.data_root) / "weights"
        lines, rows = [], []
        for m in list_weights():
            uses = [u for u in m.get("used_by", []) if u.get("paper") == self.plan.paper]
            if not uses or m.get("kind") != "release checkpoint":
                continue
            st = weights_status(m["name"], root)
            n = len(released_evals({**m, "used_by": uses}))
            lines.append({"weights": m["name"], "stands for": "; ".join(f"{u['table']} {u['method']}" for u in uses),
                          "rows": n, "state": st["state"], "how to get it": "" if st["state"] == "present" else st.get("hint", "")})
            if st["state"] == "present" and n:
                rows.append(evaluate_released(m["name"], data_root=self.data_root, weights_root=root, device=self.device,
                                              out=self.out_dir / "released", limit=limit))
        if rows:
            extra = pd.concat(rows, ignore_index=True)
            extra = extra[extra.paper == self.plan.paper]
            self.rows = pd.concat([self.rows if self.rows is not None else self.gather(), extra], ignore_index=True)
            atomic_write_text(self.out_dir / "results.csv", self.rows.to_csv(index=False))
        return pd.DataFrame(lines)

    def figures(self, only: Sequence[str] | None = None) -> list[Path]:
        """Draw every planned figure (or those in ``only``) into ``<out_dir>/figures``."""
        from .engine.drawing import FigureContext, draw
        from .engine.context import Context
        from .engine.features import FeatureBank

        rows = self.rows if self.rows is not None else self.gather()
        out = []
        for spec in self.unselected.figures if self.unselected is not None else ():
            if not only or spec.figure in only:
                print(f"[{spec.figure}] not drawn: not run in this selection (irlib reproduce --only-runs)")
        for spec in self.plan.figures:
            if only and spec.figure not in only:
                continue
            ready = all(self.store.done(r.key()) for r in spec.runs) and all(self.store.done(s.key()) for s in spec.studies)
            if not ready:
                print(f"[{spec.figure}] skipped: its runs are not finished (see irlib status)")
                continue
            first = (spec.runs or [r for st in spec.studies for r in st.deps] or [None])[0]
            ctx_job = self.store.context(first.key()) if first is not None else \
                Context(self.data_root, self.store.root, self.files)
            fb = FeatureBank.for_run(first or self.plan.runs()[0], self.device, ctx_job)
            ctx = FigureContext(spec, self.store, rows[rows.paper == self.plan.paper], self.out_dir, self.data_root,
                                self.device, fb, self.plan.profile.name)
            out += draw(spec, ctx)
        return out


def _display(obj) -> None:
    """IPython's display inside a notebook; print elsewhere."""
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with jupyterlab
        display = print
    display(obj)


def session(paper: str, *, profile: str = "smoke", device: str = "cpu", data_root: str = "data", seed: int = 0,
            out_dir: str = "reports/smoke/", runs_dir: str = "", files: dict | None = None,
            only: Sequence[str] | str | None = None, skip_data: Sequence[str] | str = (),
            only_runs: str | Path = "", options: dict | None = None) -> Session:
    """The notebook's entry point. ``runs_dir`` defaults to ``<out_dir>/../runs`` (shared by the papers of
    one ``irlib reproduce``); ``only`` keeps some tables (``["Table 1", "Fig. 4"]`` or ``"Table 1,Fig. 4"``);
    ``skip_data`` names missing datasets (``irlib reproduce --skip-missing``): their tables become rows saying
    why instead of failing the notebook; ``only_runs`` is a file of run keys (``irlib reproduce --only-runs``):
    only what those runs compute is run, the other rows say "not run in this selection"; ``options`` are the
    paper's plan options (e.g. ``{"protocol": "release"}`` for DiffLoss)."""
    if isinstance(only, str):
        only = [t.strip() for t in only.split(",") if t.strip()]
    if isinstance(skip_data, str):
        skip_data = [t.strip() for t in skip_data.split(",") if t.strip()]
    from .papers import build

    full = build(paper, profile, seed=seed, **(options or {})).select(only)
    unselected = None
    if only_runs:
        from .engine.selection import read_selection, restrict

        full, unselected = restrict(full, read_selection(only_runs))
    plan, skipped = full.without_data(skip_data)
    out = Path(out_dir).resolve()
    store = RunStore(Path(runs_dir).resolve() if runs_dir else out.parent / "runs")
    return Session(plan, store, out, device, str(Path(data_root).resolve()), dict(files or {}), full_plan=full,
                   skipped=skipped, unselected=unselected)


def not_run(plan: Plan, why: str) -> pd.DataFrame:
    """The rows of ``plan`` as tidy rows with no value and ``why`` as their note (nothing is read from a store)."""
    from .engine.core import ROW_COLUMNS

    recs = [{**r.key.as_dict(), "value": float("nan"), "measured_on": "", "n_seeds": 0, "n_images": 0, "baseline": "",
             "gain": float("nan"), "gain_ci_low": float("nan"), "gain_ci_high": float("nan"),
             "profile": plan.profile.name, "weights": plan.profile.weights,
             "notes": f"{why}; {r.notes}" if r.notes else why, "runs": ""} for r in plan.rows]
    return pd.DataFrame(recs, columns=ROW_COLUMNS)
