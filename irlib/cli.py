"""Command line: ``irlib plan | reproduce | status | doctor | eval | data | weights | notebooks``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROFILE_HELP = ("smoke: tiny networks, offline photos, random feature networks (CPU minutes); rehearse: the full "
                "plan on synthetic data in the real layouts, 2 steps per run; full: the papers' settings")


def _profile_arg(parser: argparse.ArgumentParser, default: str) -> None:
    """The one ``--profile`` option every subcommand shares (choices from :data:`irlib.engine.core.PROFILES`)."""
    from .engine.core import PROFILES

    parser.add_argument("--profile", choices=list(PROFILES), default=default, help=PROFILE_HELP)


def _fmt(ap: argparse.ArgumentParser) -> None:
    ap.formatter_class = argparse.ArgumentDefaultsHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="irlib", description="Reproduce SPN, TextPromptIR, DiffLoss and DINO-IR.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("plan", help="list the rows, runs, datasets, weights and estimated GPU-hours of a profile")
    _profile_arg(p, "full")
    p.add_argument("--only", action="append", metavar="PAPER[/TABLE]",
                   help="e.g. spn or 'spn/Table 1' (repeatable; default: all four papers)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table: a summary per table; csv: every planned row (paper,table,method,setting,dataset,metric)")
    p.add_argument("--runs", action="store_true", help="list the runs with their estimated GPU-hours instead of rows")
    p.add_argument("--seed", type=int, default=0, help="offset of every run's seed")
    p.add_argument("--gpu", default="h100", help="device table for GPU-hours and fits: h100, a100-80, a100-40, "
                   "l40s, a6000, rtx4090, a10, v100")
    p.add_argument("--budget", type=float, default=None, metavar="GPU_HOURS",
                   help="choose the runs that reproduce the most important rows within this many GPU-hours")
    p.add_argument("--select-out", default=None, metavar="FILE",
                   help="with --budget: where to write the chosen run keys (default: budget-<hours>-<gpu>.txt)")

    r = sub.add_parser("reproduce", help="preflight, train the plans' runs, execute the notebooks, write the report")
    _profile_arg(r, "smoke")
    r.add_argument("--only", action="append", metavar="NOTEBOOK[/TABLE]",
                   help="notebook (spn, textpromptir, diffloss, dinoir, benchmarks), optionally /table, e.g. "
                        "'spn/Table 1' (repeatable)")
    r.add_argument("--executor", choices=["inline", "local", "slurm"], default="inline",  # engine.execute.EXECUTORS
                   help="inline: the notebooks train; local: one worker per GPU (or --jobs CPU workers) first; "
                        "slurm: Slurm array jobs through submitit first")
    r.add_argument("--jobs", type=int, default=1, help="parallel notebooks (inline) or CPU workers (local on CPU)")
    r.add_argument("--out", default="reports", help="output folder; results go to OUT/PROFILE")
    r.add_argument("--device", default="cpu", help="cpu or cuda")
    r.add_argument("--data-root", default="data", help="folder holding the datasets in their manifests' layouts")
    r.add_argument("--seed", type=int, default=0, help="offset of every run's seed")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="pass a notebook parameter (validated against the parameters cells), e.g. "
                        "-p adm_checkpoint /w/256x256_diffusion_uncond.pt (repeatable)")
    r.add_argument("--skip-missing", action="store_true",
                   help="run what the present data allows; tables needing missing data become rows saying why")
    r.add_argument("--cell-timeout", type=int, default=None,
                   help="papermill per-cell timeout in seconds (default: none; training time limits belong to runs: "
                        "--time-min with Slurm)")
    r.add_argument("--progress-every", type=float, default=10.0, help="seconds between live progress lines")
    r.add_argument("--partition", help="Slurm partition (slurm executor)")
    r.add_argument("--gpus-per-run", type=int, default=1, help="GPUs per run (slurm executor)")
    r.add_argument("--time-min", type=int, default=1440,
                   help="Slurm time limit per task in minutes; a task that hits it is requeued and resumes")
    r.add_argument("--array-parallelism", type=int, default=None, help="Slurm: at most this many tasks at once")
    r.add_argument("--only-runs", default=None, metavar="FILE",
                   help="train only the run keys listed in FILE (one per line, '#' comments; irlib plan --budget "
                        "writes one) and the runs they depend on; keep the rows, studies and figures they compute, "
                        "show the other rows as 'not run in this selection'; with --only, the intersection")
    r.add_argument("--gpu", default=None, metavar="NAME",
                   help="device table of irlib plan (h100, a100-80, a100-40, l40s, a6000, rtx4090, a10, v100): each "
                        "run not done yet records in its job, and trains with, the gradient-accumulation factor that "
                        "fits it on that GPU (same effective batch and schedule, same run key); costs a memory trace "
                        "per run at startup: about 3 s in all for the full profile (traces shipped), seconds per run "
                        "traced on first use otherwise (cached). Default: no accumulation")

    s = sub.add_parser("status", help="state of every run in a run store (done, running with progress, failed)")
    s.add_argument("--out", default="reports", help="the --out of irlib reproduce")
    _profile_arg(s, "full")

    d = sub.add_parser("doctor", help="check every dataset and weight a profile needs (the reproduce preflight)")
    _profile_arg(d, "full")
    d.add_argument("--only", action="append", metavar="PAPER[/TABLE]", help="restrict to these papers/tables")
    d.add_argument("--data-root", default="data", help="folder holding the datasets")

    e = sub.add_parser("eval", help="evaluate a released checkpoint on a paper test set, with that field's metric "
                                    "convention; writes tidy rows marked weights=released")
    e.add_argument("weights", help="weights manifest name (irlib weights list)")
    e.add_argument("--checkpoint", help="local checkpoint file (default: the fetched file under --weights-root)")
    e.add_argument("--data-root", default="data", help="folder holding the datasets")
    e.add_argument("--weights-root", default=None, help="where checkpoints are fetched (default DATA_ROOT/weights)")
    e.add_argument("--out", default="reports/released", help="folder for results.csv")
    e.add_argument("--device", default="cpu")
    e.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images")

    da = sub.add_parser("data", help="datasets")
    dsub = da.add_subparsers(dest="dcmd", required=True)
    f = dsub.add_parser("fetch", help="download a dataset from its manifest with checksum verification")
    f.add_argument("name")
    f.add_argument("--root", default="data", help="data root")
    f.add_argument("--allow-unverified", action="store_true", help="accept a file whose manifest has no sha256")
    f.add_argument("--force", action="store_true", help="download again even if present")
    ls = dsub.add_parser("list", help="every manifest: present, fetchable or manual")
    ls.add_argument("--root", default="data", help="data root")
    sy = dsub.add_parser("synth", help="write tiny synthetic images into every manifest's declared layout")
    sy.add_argument("--root", required=True, help="where to write (e.g. /tmp/irlib-synth)")
    sy.add_argument("--n", type=int, default=3, help="images per split")
    sy.add_argument("--side", type=int, default=128, help="image side in pixels of the splits some run trains on")
    sy.add_argument("--test-side", type=int, default=72,
                    help="image side of the splits that are only evaluated on (0: --side for every split); 72 is "
                         "a multiple of no network's padding unit above 8, so evaluation pads as on real test images")

    w = sub.add_parser("weights", help="released checkpoints and pretrained feature networks")
    wsub = w.add_subparsers(dest="wcmd", required=True)
    wl = wsub.add_parser("list", help="every weights manifest and its state")
    wl.add_argument("--root", default="data/weights", help="weights root")
    wf = wsub.add_parser("fetch", help="download and verify one")
    wf.add_argument("name")
    wf.add_argument("--root", default="data/weights", help="weights root")
    wf.add_argument("--allow-unverified", action="store_true", help="accept a file with no published checksum")

    n = sub.add_parser("notebooks", help="notebook sources")
    n.add_argument("action", choices=["sync", "check"], help="sync: write .ipynb from .py; check: list stale ones")
    for sp in sub.choices.values():
        _fmt(sp)
    for sp in (dsub, wsub):
        for x in sp.choices.values():
            _fmt(x)
    return ap


def main(argv: list[str] | None = None) -> int:
    if argv is None and hasattr(__import__("signal"), "SIGPIPE"):  # `irlib plan --format csv | head` ends quietly
        import signal

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    a = build_parser().parse_args(argv)
    from .data.datasets import DatasetError
    from .models.release import ReleaseLoadError
    from .engine.store import DataMismatch
    from .reproduce import Interrupted, MissingInputs, UsageError

    try:
        return _dispatch(a)
    except DataMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"irlib {a.cmd}: {e}", file=sys.stderr)
        return 2
    except MissingInputs as e:
        print(f"irlib {a.cmd}: {e}", file=sys.stderr)
        return 3
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ReleaseLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    except OSError as e:   # a full, read-only or forbidden output folder: the message names the file, no traceback
        import errno

        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        msg = (e.strerror or str(e)) + (f" ({e.filename})" if e.filename and str(e.filename) not in str(e) else "")
        print(f"irlib {a.cmd}: {msg}; nothing was reported as finished: free space or choose another --out, then "
              f"re-run (finished runs are kept)", file=sys.stderr)
        return 1


def _plans(only, profile, seed=0):
    from . import papers
    from .reproduce import UsageError

    try:
        chosen = papers.parse_only(only)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return [papers.build(n, profile, seed).select(t) for n, t in chosen.items()]


def _dispatch(a) -> int:
    if a.cmd == "plan":
        return _cmd_plan(a)
    if a.cmd == "reproduce":
        from .reproduce import reproduce

        slurm = {"partition": a.partition, "gpus_per_run": a.gpus_per_run, "time_min": a.time_min,
                 "array_parallelism": a.array_parallelism}
        st = reproduce(profile=a.profile, out=a.out, only=a.only, jobs=a.jobs, device=a.device, data_root=a.data_root,
                       seed=a.seed, timeout=a.cell_timeout, executor=a.executor, params=dict(a.param),
                       skip_missing=a.skip_missing, slurm=slurm, progress_every=a.progress_every,
                       only_runs=a.only_runs, gpu=a.gpu)
        print(st.to_string(index=False))
        print(f"report: {Path(a.out) / a.profile / 'report.html'}")
        bad = st[st["status"] != "ok"]
        if len(bad):
            print(f"irlib reproduce: {len(bad)} of {len(st)} notebooks failed ({', '.join(bad.notebook)}); their "
                  f"errors, with how many runs/studies failed, are above and in status.csv", file=sys.stderr)
        return 0 if not len(bad) else 1
    if a.cmd == "status":
        return _cmd_status(a)
    if a.cmd == "doctor":
        from .engine.preflight import describe, preflight

        table = preflight(_plans(a.only, a.profile), a.data_root)
        print(describe(table))
        return 0 if (table.state == "present").all() else 3
    if a.cmd == "eval":
        from .released import evaluate_released

        rows = evaluate_released(a.weights, data_root=a.data_root, weights_root=a.weights_root, checkpoint=a.checkpoint,
                                 out=a.out, device=a.device, limit=a.limit)
        print(rows[["paper", "table", "method", "dataset", "metric", "value", "notes"]].to_string(index=False))
        return 0
    if a.cmd == "data":
        return _cmd_data(a)
    if a.cmd == "weights":
        return _cmd_weights(a)
    if a.cmd == "notebooks":
        from .reproduce import sync_notebooks

        stale = sync_notebooks(check=a.action == "check")
        print("\n".join(stale) or "notebooks up to date")
        return 1 if (a.action == "check" and stale) else 0
    return 2


def _cmd_plan(a) -> int:
    import pandas as pd

    from .engine.cost import calibrate, device, largest_test_images, run_costs
    from .engine.recipe import recipe_columns
    from .engine.spec import KEY_COLUMNS
    from .reproduce import UsageError

    try:
        device(a.gpu)
    except ValueError as e:
        raise UsageError(str(e)) from None
    plans = _plans(a.only, a.profile, a.seed)
    all_runs = {r.key(): r for p in plans for r in p.runs()}
    if not a.runs and a.format in ("csv", "json"):
        rows = pd.concat([p.frame() for p in plans], ignore_index=True)
        if a.format == "csv":
            rows[list(KEY_COLUMNS)].to_csv(sys.stdout, index=False)
        else:
            print(rows.to_json(orient="records", indent=1))
        return 0
    from . import papers as _papers

    every = [_papers.build(n, a.profile, a.seed) for n in _papers.registry()]   # calibration templates: whole plan
    cal = calibrate([r for p in every for r in p.runs()])
    costs = run_costs(list(all_runs.values()), a.gpu, largest_test_images(plans), cal)
    if a.budget is not None:
        return _budget(a, plans, costs)
    if a.runs:
        costs = recipe_columns(costs, list(all_runs.values()), plans)
        if a.format == "csv":
            costs.to_csv(sys.stdout, index=False)
        elif a.format == "json":
            print(costs.to_json(orient="records", indent=1))
        else:
            with pd.option_context("display.max_colwidth", 60, "display.width", 250):
                print(costs.drop(columns=["how"]).to_string(index=False))
            _cost_footer(costs, cal, a.gpu)
        return 0
    from .engine.cost import budget_items

    rows = pd.concat([p.frame() for p in plans], ignore_index=True)
    hours = dict(zip(costs.key, costs.gpu_hours_est))
    by_table: dict[tuple[str, str], set] = {}
    for it in budget_items(plans):
        by_table.setdefault((it.paper, it.table), set()).update(it.runs)
    users: dict[str, int] = {}
    for keys in by_table.values():
        for k in keys:
            users[k] = users.get(k, 0) + 1
    lines = []
    for p in plans:
        names = list(dict.fromkeys([r.key.table for r in p.rows] + [f.figure for f in p.figures]))
        for table in names:
            keys = by_table.get((p.paper, table), set())
            own = [k for k in keys if users[k] == 1]
            lines.append({"paper": p.paper, "table": table,
                          "rows": sum(r.key.table == table for r in p.rows), "runs": len(keys),
                          "GPU-h (est.)": round(sum(hours[k] for k in keys), 1),
                          "own GPU-h": round(sum(hours[k] for k in own), 1), "shared runs": len(keys) - len(own)})
    table = pd.DataFrame(lines)
    print(table.to_string(index=False))
    print(f"note: tables share runs, so their GPU-hours overlap: the column sums to {table['GPU-h (est.)'].sum():.0f} "
          f"but the {len(all_runs)} distinct runs cost {costs.gpu_hours_est.sum():.0f}; 'own GPU-h' is what only "
          f"that table needs (the cost of dropping it)")
    print(f"\n{len(rows)} rows, {len(all_runs)} distinct runs, {sum(len(p.studies()) for p in plans)} studies, "
          f"{sum(len(p.figures) for p in plans)} figures ({a.profile} profile)")
    from .results import reference

    if not a.only:   # whole papers: every reference row has a class (own / comparison / cited)
        classes = pd.concat([p.row_classes(reference(p.paper)) for p in plans], ignore_index=True)
        counts = classes.groupby(["class", "status"]).size()
        print("reference rows by class: " + "; ".join(
            f"{c} {counts[c].sum()} ({', '.join(f'{n} {st}' for st, n in counts[c].items())})"
            for c in ("own", "comparison", "cited") if c in counts))
    _cost_footer(costs, cal, a.gpu)
    from .engine.preflight import needed_data, needed_weights

    data, weights = needed_data(plans), needed_weights(plans)
    print(f"datasets: {', '.join(sorted(data)) or 'none'}")
    print(f"pretrained weights: {', '.join(sorted(weights)) or 'none (random weights in this profile)'}")
    for e in (e for p in plans for e in p.excluded):
        k = e.key
        print(f"not reproduced: {k.paper} {k.table} {k.method} [{k.setting}] {k.dataset} {k.metric}: {e.reason}")
    return 0


def _cost_footer(costs, cal, gpu: str) -> None:
    by = costs.groupby("basis").gpu_hours_est.agg(["sum", "count"])
    parts = ", ".join(f"{r['sum']:.0f} GPU-h for {int(r['count'])} runs by {b}" for b, r in by.iterrows())
    print(f"estimated GPU-hours on one {gpu} (training only, no evaluation or data loading): "
          f"{costs.gpu_hours_est.sum():.0f} for {len(costs)} runs ({parts})")
    per = costs.groupby("paper").gpu_hours_est.sum()
    print("per paper: " + ", ".join(f"{k} {v:.0f}" for k, v in per.items()))
    acc = costs.columns[costs.columns.str.startswith("accum_on_")][0]
    big = costs[costs[acc] != 1]
    print(f"memory: peak per step {costs.peak_gib.min():.1f}-{costs.peak_gib.max():.1f} GiB (traced); "
          f"{len(big)} runs do not fit one {gpu} at the paper's batch"
          + (": " + ", ".join(f"{label} (x{k} accumulation)" for label, k in zip(big.label, big[acc])) if len(big) else ""))
    print(cal.describe())


def _budget(a, plans, costs) -> int:
    from .engine.cost import TIERS, budget_items, plan_budget

    hours = dict(zip(costs.key, costs.gpu_hours_est))
    items = budget_items(plans)
    chosen, covered, left = plan_budget(items, hours, a.budget)
    spent = sum(hours[k] for k in chosen)
    print(f"budget {a.budget:g} GPU-h on {a.gpu}: {len(chosen)} runs chosen, {spent:.1f} GPU-h (estimated)")
    for t, name in enumerate(TIERS):
        cov = [i for i in covered if i.tier == t]
        lft = [i for i in left if i.tier == t]
        papers_ = sorted({i.paper for i in cov})
        print(f"  {name:12s} covered {len(cov):4d}, left {len(lft):4d}" + (f"  ({', '.join(papers_)})" if cov else ""))
    tabs: dict[tuple[str, str], list[int]] = {}
    for i in covered:
        tabs.setdefault((i.paper, i.table), [0, 0])[0] += 1
    for i in left:
        tabs.setdefault((i.paper, i.table), [0, 0])[1] += 1
    print("per table (covered/total): " + "; ".join(f"{p} {t} {c}/{c + l}" for (p, t), (c, l) in tabs.items() if c))
    out = Path(a.select_out or f"budget-{a.budget:g}-{a.gpu}.txt")
    label = dict(zip(costs.key, costs.label))
    out.write_text("".join(f"{k}  # {label[k]}, {hours[k]:.1f} GPU-h\n" for k in chosen))
    tables = sorted({f"{i.paper}/{i.table}" for i in covered})
    print(f"selection: {out} ({len(chosen)} run keys)")
    whole = [t for t in tables if not any(f"{i.paper}/{i.table}" == t for i in left)]
    print(f"command: irlib reproduce --profile {a.profile} --executor local --gpu {a.gpu} "
          + (f"--seed {a.seed} " if a.seed else "") + f"--only-runs {out}")
    print(f"  (trains these runs with the accumulation that fits a {a.gpu}; rows needing other runs show as 'not run "
          f"in this selection'; tables fully covered: {', '.join(whole) or 'none'})")
    return 0


def _cmd_status(a) -> int:
    import pandas as pd

    from .engine import RunStore
    from .io import CorruptFile

    root = Path(a.out).resolve() / a.profile / "runs"
    if not root.is_dir():
        print(f"no run store at {root} (run irlib reproduce --out {a.out} --profile {a.profile} first)")
        return 1
    store = RunStore(root)
    rows = []
    for d in sorted(p for p in root.iterdir() if (p / "job.json").is_file()):
        k = d.name
        try:   # a damaged record is a row naming the file, never a traceback (nothing is written here)
            st = store.state(k)
            label = store.job(k).get("label", "")
            err = (store.error(k) or "") if st == "failed" else ""
        except (CorruptFile, OSError) as e:
            st, label, err = "corrupt", "", str(e)
        prog = store.progress(k) or {}
        rows.append({"key": k, "label": label, "state": st,
                     "step": f"{prog.get('step', '')}/{prog.get('total', '')}" if prog else "",
                     "s/step": prog.get("s_per_step", ""), "ETA": _eta(prog.get("eta_s")) if st == "running" else "",
                     "error": err[:160]})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False) if not table.empty else "the run store is empty")
    if not table.empty:
        print(table.state.value_counts().to_string())
    slurm_dir = root.parent / "slurm"
    if slurm_dir.is_dir():
        from .engine import slurm

        print(slurm.status(slurm_dir).to_string(index=False))
    bad = int(table.state.isin(["failed", "corrupt"]).sum()) if not table.empty else 0
    if bad:   # the exit code tells scripts what the table tells people
        print(f"{bad} run(s) failed or have a damaged record; `irlib reproduce` retries them", file=sys.stderr)
        return 1
    return 0


def _eta(s) -> str:
    if not isinstance(s, (int, float)):
        return ""
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _cmd_data(a) -> int:
    from .data.fetch import fetch, load_manifest, manifest_dir

    if a.dcmd == "list":
        from .data.datasets import DatasetError
        from .data.splits import get_split, split_files

        for p in sorted(manifest_dir().glob("*.yaml")):
            m = load_manifest(p)
            manual = any(f.get("url") is None for f in m.get("files", []))
            present = []
            for split in m.get("splits") or {}:
                try:
                    sp = get_split(f"{m['name']}:{split}")
                    if sp.kind == "images":
                        split_files(a.root, sp.ref)
                    elif not (Path(a.root) / m["name"]).is_dir():
                        raise DatasetError("missing")
                    present.append(split)
                except DatasetError:
                    pass
            state = ("present" if len(present) == len(m.get("splits") or {}) else
                     f"partial ({', '.join(present)})" if present else "manual download" if manual else "fetchable")
            print(f"{m['name']:14s} {state:18s} {m.get('description', '')}")
        return 0
    if a.dcmd == "synth":
        from .data.splits import synth

        train_refs = None
        if a.test_side:
            from . import papers

            train_refs = {src.dataset for p in papers.build_all("full") for r in p.runs() for src in r.train}
        written = synth(a.root, n=a.n, side=a.side, test_side=a.test_side or None, train_refs=train_refs)
        print(f"wrote {len(written)} datasets under {a.root}")
        return 0
    m = load_manifest(a.name)
    if any(f.get("url") is None for f in m.get("files", [])):
        print(f"error: {m['name']} cannot be downloaded by script: {m.get('manual', '')}", file=sys.stderr)
        return 2
    print(fetch(a.name, a.root, allow_unverified=a.allow_unverified, force=a.force))
    return 0


def _cmd_weights(a) -> int:
    from .weights import fetch_weights, list_weights, weights_status

    if a.wcmd == "list":
        for m in list_weights():
            st = weights_status(m["name"], a.root)
            print(f"{m['name']:42s} {m.get('kind', ''):18s} {st['state']:8s} {m.get('title', '')}")
        return 0
    print(fetch_weights(a.name, a.root, allow_unverified=a.allow_unverified))
    return 0


if __name__ == "__main__":
    sys.exit(main())
