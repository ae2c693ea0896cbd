"""Batch reproduction: run the notebooks with papermill, gather their tidy rows, write the report."""
from __future__ import annotations

import html
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from .results import SMOKE_BANNER, compare

REPO = Path(__file__).resolve().parents[1]


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


def _run_one(nb: Path, out_root: Path, params: dict, timeout: int, threads: int = 0) -> dict:
    out_dir = out_root / nb.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.csv").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out_dir / nb.name), "--cwd", str(nb.parent),
           "--log-level", "WARNING", "--execution-timeout", str(timeout)]
    for k, v in {**params, "out_dir": str(out_dir)}.items():
        cmd += ["-p", k, str(v)]
    t0 = time.time()
    env = dict(os.environ)
    if threads:  # parallel notebooks share the cores instead of oversubscribing them
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("MPLBACKEND", "Agg")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    status = "ok" if proc.returncode == 0 and (out_dir / "results.csv").is_file() else "failed"
    err = "" if status == "ok" else (proc.stderr.strip().splitlines() or ["no results.csv written"])[-1][:300]
    (out_dir / "papermill.log").write_text(proc.stdout + proc.stderr)
    return {"notebook": nb.stem, "status": status, "seconds": round(time.time() - t0, 1), "error": err}


def reproduce(profile: str = "smoke", out: str | Path = "reports", only: list[str] | None = None, jobs: int = 1,
              device: str = "cpu", data_root: str = "data", seed: int = 0, timeout: int = 1800) -> pd.DataFrame:
    """Run every notebook (or those whose name starts with an ``only`` prefix, e.g. ``spn`` or ``spn_tables``)
    and gather their rows into ``<out>/<profile>/results.{csv,parquet}`` plus ``report.{md,html}``.
    A failing notebook is recorded as failed; the others still run. Returns the run status table."""
    if profile not in ("smoke", "full"):
        raise ValueError("profile must be 'smoke' or 'full'")
    nbs = sorted(notebook_dir().glob("*.ipynb"))
    if only:
        keys = [o.replace("/", "_").lower() for o in only]
        nbs = [n for n in nbs if any(n.stem.lower().startswith(k) for k in keys)]
    if not nbs:
        raise FileNotFoundError(f"no notebooks matched {only} in {notebook_dir()}")
    out_root = Path(out).resolve() / profile  # notebooks run with cwd=notebooks/, so pass absolute paths
    params = {"profile": profile, "device": device, "data_root": str(Path(data_root).resolve()), "seed": seed}
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        threads = max(1, (os.cpu_count() or 1) // max(1, jobs)) if jobs > 1 else 0
        futs = [ex.submit(_run_one, nb, out_root, params, timeout, threads) for nb in nbs]
        status = [f.result() for f in tqdm(futs, desc="notebooks")]
    status_df = pd.DataFrame(status)
    write_report(out_root, status_df, profile)
    return status_df


def gather(out_root: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in sorted(Path(out_root).glob("*/results.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_report(out_root: Path, status: pd.DataFrame, profile: str) -> Path:
    """Write results.csv/.parquet and report.md/.html beside the executed notebooks."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    rows = gather(out_root)
    status.to_csv(out_root / "status.csv", index=False)
    if not rows.empty:
        rows["setting"] = rows["setting"].fillna("").astype(str)
        rows.to_csv(out_root / "results.csv", index=False)
        rows.to_parquet(out_root / "results.parquet", index=False)
        cmp = compare(rows)
    else:
        cmp = pd.DataFrame()
    smoke = profile == "smoke" or (not rows.empty and (rows["weights"] == "random").any())
    md = [f"# irlib reproduction report ({profile} profile)", ""]
    if smoke:
        md += [f"> **{SMOKE_BANNER}**", ""]
    md += ["## Notebook runs", "", _table(status), ""]
    cols = ["paper", "table", "method", "setting", "paper_dataset", "dataset", "metric", "value", "paper_value", "delta",
            "n_seeds", "ci_low", "ci_high", "weights"]
    if not cmp.empty:
        for paper, g in cmp.groupby("paper"):
            md += [f"## {paper}", "", _table(g[cols]), ""]
    fig_name = _figure(cmp, out_root, smoke)
    if fig_name:
        md += [f"![reproduced vs paper]({fig_name})", ""]
    (out_root / "report.md").write_text("\n".join(md))
    page = ["<!doctype html><meta charset='utf-8'><title>irlib report</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px;font-size:12px}.banner{background:#fee;border:2px solid #c00;padding:1em;font-weight:bold}</style>",
            f"<h1>irlib reproduction report ({html.escape(profile)} profile)</h1>"]
    if smoke:
        page.append(f"<p class='banner'>{html.escape(SMOKE_BANNER)}</p>")
    page.append("<h2>Notebook runs</h2>" + status.to_html(index=False))
    if fig_name:
        page.append(f"<h2>Reproduced vs paper (PSNR)</h2><img src='{fig_name}' style='max-width:100%'>")
    if not cmp.empty:
        for paper, g in cmp.groupby("paper"):
            page.append(f"<h2>{html.escape(paper)}</h2>" + g[cols].to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}"))
    (out_root / "report.html").write_text("\n".join(page))
    return out_root / "report.md"


def _figure(cmp: pd.DataFrame, out_root: Path, smoke: bool) -> str | None:
    """Scatter of reproduced against printed PSNR, one panel per paper (seaborn); returns the file name."""
    if cmp.empty or "paper_value" not in cmp:
        return None
    d = cmp[(cmp.metric == "PSNR") & cmp.paper_value.notna() & cmp.value.notna()]
    if d.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    g = sns.relplot(data=d, x="paper_value", y="value", hue="table", col="paper", col_wrap=2, height=3,
                    facet_kws={"sharex": False, "sharey": False})
    for ax in g.axes.flat:
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    g.set_axis_labels("paper PSNR (dB)", "reproduced PSNR (dB)")
    if smoke:
        g.figure.suptitle("SMOKE: random weights, tiny models - not comparable", color="red", y=1.03)
    g.savefig(out_root / "report_psnr.png", dpi=80, bbox_inches="tight")
    plt.close(g.figure)
    return "report_psnr.png"


def _table(df: pd.DataFrame) -> str:
    df = df.copy()
    for c in df.columns:
        if df[c].dtype.kind == "f":
            df[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    lines = ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *lines])
