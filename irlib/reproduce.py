"""Batch reproduction: preflight, run the plans' jobs (inline in the notebooks, or first through the local or
Slurm executor), execute the notebooks with papermill, gather their rows and write the report.

``irlib reproduce --profile full --executor slurm`` submits the missing runs as Slurm array jobs, shows their
progress, and when they are done executes the notebooks, which then only gather from the run store and draw.
Ctrl-C (SIGINT) or SIGTERM stops the running notebooks' kernels and the local workers at once (they checkpoint),
cancels what is queued, and still writes the status table and a partial report; a re-run resumes.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from .io import atomic_write_text
from .papers import PAPERS, parse_only, registry
from .procs import die_with_parent, stop_process_groups

REPO = Path(__file__).resolve().parents[1]


class UsageError(ValueError):
    """A wrong option or value: the CLI prints it and exits 2."""


def notebook_dir() -> Path:
    return Path(os.environ.get("IRLIB_NOTEBOOKS", REPO / "notebooks"))


def sync_notebooks(check: bool = False) -> list[str]:
    """Write ``notebooks/*.ipynb`` from their jupytext ``.py`` sources; with ``check`` only report the stale ones."""
    import jupytext
    import nbformat

    stale = []
    for py in sorted(notebook_dir().glob("*.py")):
        nb = jupytext.read(py)
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i:02d}"  # stable ids keep the .ipynb byte-identical across syncs
        nb.metadata.pop("jupytext", None)  # jupytext's filter order varies between reads
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        target = py.with_suffix(".ipynb")
        text = nbformat.writes(nb) + "\n"
        if not target.is_file() or target.read_text() != text:
            stale.append(target.name)
            if not check:
                target.write_text(text)
    return stale


# ------------------------------------------------------------------------------------------ selection
def select(only: Sequence[str] | None) -> dict[str, list[str]]:
    """``--only`` values (``spn``, ``spn/Table 1``, ``dinoir/Fig. 3b``, ``benchmarks``) -> notebook -> tables
    (empty list = the whole notebook). Unknown names raise :class:`UsageError` listing the valid ones."""
    nbs = sorted(p.stem for p in notebook_dir().glob("*.ipynb"))
    for value in only or ():
        name = value.split("/", 1)[0].strip().lower()
        if name not in nbs:
            raise UsageError(f"--only {value!r}: no notebook {name!r} in {notebook_dir()}; notebooks: "
                             f"{', '.join(nbs) or 'none'}")
    try:
        chosen = parse_only(only, extra=tuple(n for n in nbs if n not in PAPERS))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return {n: chosen[n] for n in nbs if n in chosen}


@dataclass(frozen=True)
class Param:
    """One assignment of a notebook's ``parameters`` cell: its default, type and help comment. A comment with
    ``one of: a, b, c`` declares the only values allowed (the list ends at ``(``, ``;`` or the line's end)."""

    name: str
    default: object
    type: str          # int, float, bool, str, NoneType, or "" when the default is not a literal
    help: str = ""

    @property
    def choices(self) -> tuple[str, ...]:
        m = re.search(r"one of:\s*([^(;]+)", self.help)
        if not m:
            return ()
        return tuple(c.strip().strip("'\"") for c in re.split(r"[,|]", m.group(1)) if c.strip().strip("'\""))


def parameters_cell(path: Path) -> dict[str, Param]:
    """The parameters of the notebook at ``path`` (the cell tagged ``parameters``), read with :mod:`ast`: every
    top-level ``NAME = literal`` or ``NAME: type = literal``, whatever its comment holds (papermill's own
    line parser skips lines whose comment has brackets or quotes)."""
    import ast
    import io
    import tokenize

    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    src = cell.source
    try:
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(src).readline) if tok.type == tokenize.COMMENT}
        body = ast.parse(src).body
    except (SyntaxError, tokenize.TokenError) as e:
        raise UsageError(f"{path}: its parameters cell is not valid Python ({e})") from None
    out = {}
    for node in body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if not isinstance(target, ast.Name) or node.value is None:
            continue
        try:
            default = ast.literal_eval(node.value)
            kind = type(default).__name__ if isinstance(default, (bool, int, float, str, type(None))) else ""
        except ValueError:
            default, kind = ast.get_source_segment(src, node.value), ""
        if isinstance(node, ast.AnnAssign) and isinstance(node.annotation, ast.Name) and \
                node.annotation.id in ("int", "float", "bool", "str"):
            kind = node.annotation.id
        out[target.id] = Param(target.id, default, kind, comments.get(node.end_lineno, ""))
    return out


def notebook_parameters(name: str) -> dict[str, Param]:
    return parameters_cell(notebook_dir() / f"{name}.ipynb")


OWNED = {"profile": "--profile", "device": "--device", "data_root": "--data-root", "seed": "--seed",
         "out_dir": "--out", "runs_dir": "--out (the run store is OUT/PROFILE/runs)", "only": "--only",
         "skip_data": "--skip-missing", "only_runs": "--only-runs"}
"""Notebook parameters ``irlib reproduce`` sets from its own options: ``-p`` may not override them (a ``-p profile
full`` under ``--profile smoke`` would run the full plan into ``smoke/``, past the preflight)."""

_EXPECTED = {"int": "an integer", "float": "a number", "bool": "True or False"}


def parse_value(p: Param, value: str, notebook: str) -> object:
    """``value`` (a ``-p`` string) as the type of ``p``'s default, or :class:`UsageError` naming the parameter,
    the value and what is expected. Strings stay strings (``-p only 1`` is ``"1"``, not ``1``); a parameter whose
    default is ``None`` or not a literal takes papermill's reading (True/False/None, int, float, else text)."""
    where = f"(in {notebook}, default {p.default!r})"
    if p.choices and value not in p.choices:
        raise UsageError(f"-p {p.name} {value!r}: expected one of {', '.join(p.choices)} {where}")
    try:
        if p.type == "bool":
            if value not in ("True", "False", "true", "false", "1", "0"):
                raise ValueError(value)
            return value in ("True", "true", "1")
        if p.type == "int":
            return int(value)
        if p.type == "float":
            out = float(value)
            if not math.isfinite(out):
                raise ValueError(value)
            return out
    except ValueError:
        raise UsageError(f"-p {p.name} {value!r}: expected {_EXPECTED[p.type]} {where}") from None
    if p.type == "str":
        return value
    return {"True": True, "False": False, "None": None}.get(value, _number_or_text(value))


def _number_or_text(value: str) -> object:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def check_params(selection: dict[str, list[str]], params: dict[str, str]) -> dict[str, dict[str, object]]:
    """Which ``-p NAME VALUE`` goes to which notebook, as the value of that notebook's parameter type: a name must
    exist in the parameters cell of at least one selected notebook (and goes only to those), must not be one the
    command line owns (:data:`OWNED`), and its value must read as the parameter's type and declared choices
    (:func:`parse_value`) — all checked before anything runs."""
    for k in params:
        if k in OWNED:
            raise UsageError(f"-p {k}: set by irlib reproduce itself; use {OWNED[k]} instead")
    declared = {n: notebook_parameters(n) for n in selection}
    per: dict[str, dict[str, object]] = {n: {} for n in selection}
    for k, v in params.items():
        takers = [n for n in selection if k in declared[n]]
        if not takers:
            valid = sorted(set().union(*declared.values()))
            raise UsageError(f"-p {k}: no selected notebook has a parameter {k!r}; they have: {', '.join(valid)}")
        for n in takers:
            per[n][k] = parse_value(declared[n][k], str(v), n)
    return per


def unknown_keys(keys: Sequence[str], plans: Sequence, profile: str, seed: int, only: Sequence[str] | None) -> str:
    """'' when every key in ``keys`` is a run of ``plans`` (the profile's plans, cut by ``--only``); otherwise why
    not, key by key: a run of this profile outside ``--only``, a run of another profile or seed offset, a study,
    or nothing any plan has."""
    from .engine.core import PROFILES
    from .papers import build, registry

    have = {r.key() for p in plans for r in p.runs()}
    missing = [k for k in keys if k not in have]
    if not missing:
        return ""
    where: dict[str, str] = {}

    def look(label: str, ps) -> None:
        for p in ps:
            for r in p.runs():
                where.setdefault(r.key(), f"{label} {p.paper} run {r.label or r.net!r}")
            for s in p.studies():
                where.setdefault(s.key(), f"{label} {p.paper} study {s.name!r} (list run keys, not studies)")

    whole = [build(n, profile, seed) for n in registry()]
    look(f"outside --only: a {profile}-profile", whole)
    for other in PROFILES:
        look(f"a {other}-profile", [build(n, other, seed) for n in registry()])
    if seed:
        look(f"a seed-0 {profile}-profile", [build(n, profile, 0) for n in registry()])
    scope = ", ".join(f"{p.paper}" + (f" ({', '.join(p.tables())})" if only else "") for p in plans) or "none"
    names = "; ".join(f"{k} ({where.get(k, 'no run of any profile')})" for k in missing[:20])
    more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
    return (f"{len(missing)} of {len(keys)} keys are not runs of the {profile} profile's selected plans "
            f"[{scope}]{' with --seed ' + str(seed) if seed else ''}: {names}{more}")


def writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out {out}: not writable ({e.strerror or e}); choose another folder") from e


# ------------------------------------------------------------------------------------------ running
@dataclass
class Runner:
    """Executes notebooks with papermill in their own process groups, so a signal stops them at once. Papermill
    gets SIGTERM when this process dies, even by SIGKILL (:func:`irlib.procs.die_with_parent`); its kernel exits
    within a second of papermill (ipykernel polls ``JPY_PARENT_PID``, which jupyter_client sets), and local
    executor workers carry the same parent-death signal."""

    out_root: Path
    timeout: int | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started: set = field(default_factory=set)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, nb: str, params: dict, threads: int = 0) -> dict:
        out_dir = self.out_root / nb
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.stopping.is_set():
            return {"notebook": nb, "status": "cancelled", "seconds": 0.0, "error": "interrupted before it started"}
        (out_dir / "results.csv").unlink(missing_ok=True)
        src = notebook_dir() / f"{nb}.ipynb"
        cmd = [sys.executable, "-m", "papermill", str(src), str(out_dir / f"{nb}.ipynb"), "--cwd", str(src.parent),
               "--log-level", "WARNING", "--request-save-on-cell-execute"]
        if self.timeout:
            cmd += ["--execution-timeout", str(self.timeout)]
        for k, v in {**params, "out_dir": str(out_dir)}.items():
            cmd += ["-r" if isinstance(v, str) else "-p", k, str(v)]   # -r: text stays text ("1" is not 1)
        env = dict(os.environ)
        if threads:  # parallel notebooks share the cores instead of oversubscribing them
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env.setdefault("MPLBACKEND", "Agg")
        t0 = time.time()
        with open(out_dir / "papermill.log", "w") as log:
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                 preexec_fn=die_with_parent)
            with self.lock:
                self.procs[nb] = p
                self.started.add(nb)
            code = p.wait()
        with self.lock:
            self.procs.pop(nb, None)
        text = (out_dir / "papermill.log").read_text(errors="replace")
        if self.stopping.is_set() and code != 0:
            return {"notebook": nb, "status": "interrupted", "seconds": round(time.time() - t0, 1),
                    "error": "stopped by a signal; re-run to resume (finished runs are kept)"}
        ok = code == 0 and (out_dir / "results.csv").is_file()
        return {"notebook": nb, "status": "ok" if ok else "failed", "seconds": round(time.time() - t0, 1),
                "error": "" if ok else explain_failure(text, params)}

    def stop(self) -> None:
        """Stop every running notebook (its kernel is in the same process group) and refuse new ones."""
        self.stopping.set()
        with self.lock:
            procs = list(self.procs.values())
        stop_process_groups(procs, 10)


def explain_failure(log: str, params: dict) -> str:
    """The last error of a notebook, with advice for the common causes (out of memory, a dead kernel)."""
    lines = [ln for ln in log.strip().splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "no output")
    low = log.lower()
    if "outofmemoryerror" in low or "out of memory" in low or "deadkernelerror" in low or "kernel died" in low:
        dev = params.get("device", "cpu")
        return (f"out of memory (or the kernel was killed) on {dev} with the {params.get('profile')} profile: "
                f"{last.strip()[:200]}. The full profile's batches need a GPU: use --device cuda (and --executor "
                f"local/slurm), or the smoke profile on a CPU")
    return last.strip()[:400]


def progress_lines(store_root: Path, seen: dict) -> list[str]:
    """One line per run whose progress file changed since the last call: label, step, loss, s/step, ETA."""
    out = []
    for p in sorted(store_root.glob("*/progress.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if seen.get(p) == d.get("updated"):
            continue
        seen[p] = d.get("updated")
        eta = d.get("eta_s") or 0
        loss = d.get("loss")
        out.append(f"  {d.get('label', d.get('key'))[:48]:48s} step {d.get('step')}/{d.get('total')}"
                   f"  loss {loss:.4g}" if isinstance(loss, (int, float)) else f"  {d.get('label')} step {d.get('step')}")
        out[-1] += f"  {d.get('s_per_step', 0):.3g} s/step  ETA {_hms(eta)}"
    return out


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Monitor(threading.Thread):
    """Prints live per-run progress from the run store every ``every`` seconds until stopped."""

    def __init__(self, store_root: Path, every: float = 10.0, stream=None):
        super().__init__(daemon=True)
        self.store_root, self.every, self.stream = store_root, every, stream or sys.stderr
        self.halt = threading.Event()
        self.seen: dict = {}

    def run(self) -> None:
        while not self.halt.wait(self.every):
            lines = progress_lines(self.store_root, self.seen)
            if lines:
                print(f"[{time.strftime('%H:%M:%S')}] training progress:", *lines, sep="\n", file=self.stream, flush=True)


def check_device(device: str, executor: str = "inline") -> None:
    """``--device`` is ``cpu``, ``cuda`` or ``cuda:N`` and, unless the runs go to Slurm nodes (whose GPUs this
    machine cannot see), names a device this machine has — checked before any data is read or run started."""
    import re

    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise UsageError(f"--device must be cpu, cuda or cuda:N; got {device!r}")
    if device == "cpu" or executor == "slurm":
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is visible here (torch {torch.__version__}, "
                         f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use --device cpu, "
                         f"or --executor slurm to run on GPU nodes")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def reproduce(profile: str = "smoke", out: str | Path = "reports", only: Sequence[str] | None = None, jobs: int = 1,
              device: str = "cpu", data_root: str = "data", seed: int = 0, timeout: int | None = None,
              executor: str = "inline", params: dict[str, str] | None = None, skip_missing: bool = False,
              slurm: dict | None = None, progress_every: float = 10.0, preflight_only: bool = False,
              only_runs: str | Path | None = None, gpu: str | None = None, echo=print) -> pd.DataFrame:
    """Run the selected notebooks (and, with ``executor`` local/slurm, their plans' jobs first) and write
    ``<out>/<profile>/{results.csv,results.parquet,status.csv,report.md,report.html}``. Returns the status
    table. Raises :class:`UsageError` for wrong options and :class:`MissingInputs` when the preflight fails.

    ``only_runs``: a file of run keys (:func:`irlib.engine.selection.read_selection`); only those runs and the
    runs they depend on are trained, and only the rows, studies and figures they compute are kept (the other
    rows say "not run in this selection"); papers none of whose runs are listed, and the notebooks that are not
    papers unless ``only`` names them, do not run. ``gpu``: a device of :data:`irlib.engine.cost.DEVICES`; every
    run not done yet records the gradient-accumulation factor that fits it on that GPU in its job record, and
    trains with it (without: 1)."""
    from . import plan
    from .engine.preflight import describe, missing_refs, preflight

    if profile not in plan.PROFILES:
        raise UsageError(f"--profile must be one of {', '.join(plan.PROFILES)}; got {profile!r}")
    if executor not in plan.EXECUTORS:
        raise UsageError(f"--executor must be one of {', '.join(plan.EXECUTORS)}; got {executor!r}")
    check_device(device, executor)
    if gpu is not None:
        from .engine.cost import device as gpu_device

        try:
            gpu_device(gpu)
        except ValueError as e:
            raise UsageError(f"--gpu: {e}") from None
    keys = None
    if only_runs is not None:
        from .engine.selection import SelectionError, read_selection

        try:
            keys = read_selection(only_runs)
        except SelectionError as e:
            raise UsageError(str(e)) from None
    selection = select(only)
    if keys is not None and not only:   # a selection of runs: the benchmarks notebook only when --only names it
        selection = {n: t for n, t in selection.items() if n in PAPERS}
    per_nb = check_params(selection, dict(params or {}))
    out_root = Path(out).resolve() / profile   # notebooks run with cwd=notebooks/, so paths are absolute
    writable(out_root)
    store_root = out_root / "runs"
    data_root = str(Path(data_root).resolve())
    # a -p value that is also a plan option (DiffLoss's protocol) shapes the plan checked and selected here too
    by_nb = {n: plan.build(n, profile, seed, **{k: v for k, v in per_nb.get(n, {}).items()
                                               if k in registry()[n].options()}).select(t)
             for n, t in selection.items() if n in PAPERS}
    selection_file = None
    if keys is not None:
        by_nb, selection_file = _only_runs(keys, only_runs, by_nb, profile, seed, only, out_root, echo)
        selection = {n: t for n, t in selection.items() if n in by_nb or n not in PAPERS}
        per_nb = {n: v for n, v in per_nb.items() if n in selection}
    plans = list(by_nb.values())

    table = preflight(plans, data_root)
    problems = table[table.state != "present"]
    atomic_write_text(out_root / "preflight.csv", table.to_csv(index=False))
    if not table.empty:
        echo("preflight: the datasets and weights the selected plans need")
        echo(describe(table))
    if preflight_only:
        return pd.DataFrame(columns=["notebook", "status", "seconds", "error"])
    if len(problems) and not skip_missing:
        raise MissingInputs(f"{len(problems)} inputs are missing (listed above); fetch them, or re-run with "
                            f"--skip-missing to run what can run (the rest becomes rows saying why)")
    skip = sorted(missing_refs(table)) if skip_missing else []
    for n in per_nb:
        if skip and n in PAPERS:
            per_nb[n].setdefault("skip_data", ",".join(skip))

    kept_plans = {n: p.without_data(skip)[0] for n, p in by_nb.items()}
    store = plan.RunStore(store_root)
    factors = accumulation_factors(list(kept_plans.values()), store, gpu, echo) if gpu else {}
    if executor == "inline" and kept_plans:   # the notebooks train: the jobs' records carry this --gpu's factors
        plan.submit_plans(list(kept_plans.values()), store, plan.Context(data_root, store_root), accum=factors)
    base = {"profile": profile, "device": device, "data_root": data_root, "seed": seed}
    status_rows: list[dict] = []
    runner = Runner(out_root, timeout)
    monitor = Monitor(store_root, progress_every)
    local = None
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    # explicitly: a shell starts background jobs with SIGINT ignored, and `kill -INT` should still stop this
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = False
    monitor.start()
    try:
        if executor != "inline" and plans:
            echo(f"running {sum(len(p.runs()) for p in plans)} runs through the {executor} executor "
                 f"(run store {store_root})")
            kept = list(kept_plans.values())
            local = plan.make_executor(executor, store, device=device, jobs=jobs, slurm=slurm,
                                       on_event=lambda k, key, m: echo(f"  [{k}] {key} {m}"))
            plan.execute(kept, store, plan.Context(data_root, store_root), executor=local, accum=factors)
        threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if jobs > 1 else 0
        # after a local executor the machine is free again: the notebooks (gathering, studies' figures) share it
        # too; after Slurm they run on the submitting (login) node, one at a time
        nb_jobs = 1 if executor == "slurm" else jobs
        pool = ThreadPoolExecutor(max_workers=max(1, nb_jobs))
        try:
            futs = {}
            for nb, tables in selection.items():
                prm = {**base, **per_nb[nb], "runs_dir": str(store_root)} if nb in PAPERS else {**base, **per_nb[nb]}
                if tables:
                    prm["only"] = ",".join(tables)
                if selection_file is not None and nb in PAPERS:
                    prm["only_runs"] = str(selection_file)
                futs[nb] = pool.submit(runner.run, nb, prm, threads)
            for nb, f in futs.items():
                while not f.done():
                    time.sleep(0.2)
                r = job_outcome(f.result(), kept_plans.get(nb), store_root, out, profile)
                status_rows.append(r)
                echo(f"{nb}: {r['status']} ({r['seconds']} s){'  ' + r['error'] if r['error'] else ''}")
        except KeyboardInterrupt:
            runner.stop()   # kill the running notebooks before waiting for their threads
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        interrupted = True
        echo("interrupted: stopping the notebooks and workers, writing the status and a partial report…")
        runner.stop()
        if local is not None:
            local.terminate()
        done = {r["notebook"] for r in status_rows}
        for nb in selection:
            if nb not in done:
                status_rows.append({"notebook": nb, "status": "interrupted" if nb in runner.started else "cancelled",
                                    "seconds": 0.0, "error": "stopped by a signal; re-run to resume"})
    finally:
        monitor.halt.set()
        for s, h in old.items():
            signal.signal(s, h)
    status = pd.DataFrame(status_rows, columns=["notebook", "status", "seconds", "error"])
    write_outputs(out_root, status, profile)
    bad = status[status.status != "ok"]
    if len(bad) and not interrupted:
        echo(f"{len(bad)} of {len(status)} notebooks failed: {', '.join(bad.notebook)} (see status.csv and the report)")
    if interrupted:
        raise Interrupted(out_root)
    return status


def _only_runs(keys: list[str], path, by_nb: dict, profile: str, seed: int, only, out_root: Path,
               echo) -> tuple[dict, Path]:
    """``by_nb`` cut down to the selection ``keys`` (:func:`irlib.engine.selection.restrict`), without the papers
    it leaves no run of; and the file the notebooks read it from (``OUT/PROFILE/only-runs.txt``: the keys and the
    runs they depend on). Unknown keys are a :class:`UsageError` naming each, before anything runs."""
    from .engine.selection import closure, computes_anything, restrict

    why = unknown_keys(keys, list(by_nb.values()), profile, seed, only)
    if why:
        raise UsageError(f"--only-runs {path}: {why}")
    cut = {n: restrict(p, keys) for n, p in by_nb.items()}
    kept = {n: k for n, (k, _) in cut.items() if computes_anything(k)}
    every = closure(by_nb.values(), keys)
    labels = {r.key(): r.label or r.net for p in by_nb.values() for r in p.runs()}
    extra = sorted(every - set(keys))
    echo(f"--only-runs {path}: {len(keys)} runs listed" + (f", {len(extra)} more they depend on ("
                                                          f"{', '.join(labels[k] for k in extra)})" if extra else ""))
    for n, (k, left) in cut.items():
        if n not in kept:
            echo(f"  {n}: none of its runs is listed; its notebook does not run")
            continue
        tables = k.tables()
        echo(f"  {n}: {len(k.rows)} rows, {len(k.figures)} figures, {len(k.studies())} studies kept "
             f"({', '.join(tables) or 'no table'}); {len(left.rows)} rows and {len(left.figures)} figures not run "
             f"in this selection")
    target = out_root / "only-runs.txt"
    atomic_write_text(target, f"# --only-runs {Path(path).resolve()} and the runs they depend on\n" + "".join(
        f"{k}  # {labels.get(k, '')}{' (dependency)' if k in extra else ''}\n"
        for k in list(keys) + extra))
    return kept, target


def accumulation_factors(plans: Sequence, store, gpu: str, echo=print) -> dict[str, int]:
    """Run key -> the gradient-accumulation factor that fits the run on ``gpu`` (``irlib plan``'s
    ``accum_on_<gpu>``), for the runs of ``plans`` not done yet in ``store``; the memory model is calibrated on
    the full profile's bench runs. A run that does not fit even a micro-batch of one is a :class:`UsageError`."""
    from .engine import cost
    from .io import CorruptFile
    from .papers import build, registry

    runs: dict[str, object] = {}
    for p in plans:
        for r in p.runs():
            try:
                done = store.state(r.key()) == "done"
            except (CorruptFile, OSError):
                done = False
            if not done:
                runs.setdefault(r.key(), r)
    if not runs:
        return {}
    cal = cost.calibrate([r for n in registry() for r in build(n, "full").runs()], trace=cost.traced)
    costs = cost.run_costs(list(runs.values()), gpu, cost.largest_test_images(plans), cal, trace=cost.traced)
    col = f"accum_on_{gpu}"
    factors = {k: int(v) for k, v in zip(costs.key, costs[col])}
    bad = costs[costs[col] == 0]
    if len(bad):
        raise UsageError(f"--gpu {gpu}: {len(bad)} runs do not fit one {gpu} even one image per micro-batch "
                         f"({', '.join(f'{lb} needs {g:.1f} GiB at the full batch' for lb, g in zip(bad.label, bad.need_gib))}"
                         f"); choose a GPU with more memory")
    big = costs[costs[col] > 1]
    echo(f"--gpu {gpu}: {len(costs)} runs to train; " + (
        f"{len(big)} with gradient accumulation (same effective batch and schedule): "
        + ", ".join(f"{lb} x{k}" for lb, k in zip(big.label, big[col])) if len(big) else "all fit at their batch"))
    return factors


def job_outcome(result: dict, plan, store_root: Path, out, profile: str) -> dict:
    """A notebook's status row, failed when a run or study its plan needs failed or did not finish (a notebook
    that ran to the end with failed runs shows their rows as missing: that is not success)."""
    if plan is None or result["status"] in ("interrupted", "cancelled"):
        return result
    from .engine.execute import summary
    from .engine.store import RunStore

    keys = [r.key() for r in plan.runs()] + [s.key() for s in plan.studies()]
    store = RunStore(store_root)
    known = [k for k in keys if (store.dir(k) / "job.json").is_file()]
    table = summary(store, known)
    failed = table[table.state == "failed"]
    unfinished = len(keys) - int((table.state == "done").sum()) - len(failed)
    if not len(failed) and not unfinished:
        return result
    parts = []
    if len(failed):
        first = failed.iloc[0]
        parts.append(f"{len(failed)} of {len(keys)} runs/studies failed (first: {first.label or first.key}: "
                     f"{str(first.error)[:160]})")
    if unfinished:
        parts.append(f"{unfinished} of {len(keys)} runs/studies not finished")
    why = "; ".join(parts) + f"; see irlib status --out {out} --profile {profile}"
    return {**result, "status": "failed", "error": f"{result['error']}; {why}" if result["error"] else why}


class MissingInputs(RuntimeError):
    """The preflight found missing datasets or weights (and --skip-missing was not given)."""


class Interrupted(KeyboardInterrupt):
    """``irlib reproduce`` was stopped by a signal after writing its status and partial report."""

    def __init__(self, out_root: Path):
        super().__init__(f"interrupted; status and partial report in {out_root}")
        self.out_root = out_root


def gather(out_root: Path, notebooks: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of the notebooks' ``results.csv`` (of ``notebooks`` only, when given)."""
    paths = sorted(Path(out_root).glob("*/results.csv"))
    if notebooks is not None:
        paths = [p for p in paths if p.parent.name in set(notebooks)]
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_outputs(out_root: Path, status: pd.DataFrame, profile: str) -> Path:
    """``results.csv``/``.parquet``, ``status.csv`` and the report, from this run's rows only: the notebooks
    of ``status`` that ran (each starts by removing its old ``results.csv``; a cancelled one contributes
    nothing), so a failed or skipped notebook never shows an earlier run's numbers as this run's. Every file is
    written atomically (:mod:`irlib.io`)."""
    import io

    from .engine.core import ROW_COLUMNS
    from .engine.spec import KEY_COLUMNS
    from .io import atomic_write_bytes, atomic_write_text
    from .report import write_report

    ran = [nb for nb, st in zip(status.notebook, status.status) if st != "cancelled"]
    rows = gather(out_root, ran)
    atomic_write_text(out_root / "status.csv", status.to_csv(index=False))
    if rows.empty:
        rows = pd.DataFrame(columns=ROW_COLUMNS)
    for col in KEY_COLUMNS:  # the row key: '' stays '' (gather reads '' as missing for the value columns)
        if col in rows:
            rows[col] = rows[col].fillna("").astype(str)
    atomic_write_text(out_root / "results.csv", rows.to_csv(index=False))
    buf = io.BytesIO()
    rows.to_parquet(buf, index=False)
    atomic_write_bytes(out_root / "results.parquet", buf.getvalue())
    return write_report(out_root, status, profile, rows=rows)
