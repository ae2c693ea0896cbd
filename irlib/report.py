"""The reproduction report: every paper table as the paper lays it out, reproduced beside printed.

:func:`write_report` reads what a batch run leaves under ``out_root``

- ``results.csv``: the tidy rows (one number per row; ``paper, table, method, setting, dataset, metric, value,
  measured_on, n_seeds, n_images, baseline, gain, gain_ci_low, gain_ci_high, profile, weights, notes, runs``),
- the run status table (``notebook, status, seconds, error`` and any further columns),
- ``<notebook>/<notebook>.ipynb`` (the executed notebooks) and ``<notebook>/figures/*.json`` (figure sidecars
  written by :func:`irlib.figures.save_figure`),

and writes ``report.md`` and ``report.html`` (plus ``report_psnr.png``) next to them. Links to notebooks and
images are relative, so the folder can be moved or served as it is.

Layout of a paper table. Each table of :func:`irlib.results.reference` becomes a pivot: one row per method
(in the order of the reference CSV), one column group per test set, one sub-column per metric. The
``setting`` of a row is split into its ``; ``-separated parts and each part is placed by a rule, not by hand:

- a part shared by every row of the table is the table's condition and is printed once above it;
- a part that only occurs with some of the table's test sets qualifies the test set (``sigma=15`` with CBSD68,
  ``train=ITS`` with SOTS-indoor) and goes into the column header (``sigma=15 · CBSD68``);
- any other part (``x4``, ``trained on Noise+Rain``, ``lambda=1e-3``) is a condition of the row and goes into
  a *Setting* column beside the method.

Each cell reads ``reproduced / paper (Δ)`` with Δ = reproduced − paper, rounded to the paper's printed
digits; ``— / paper`` where irlib has no number for a cited row; the bare value where the paper prints none.
Gains of a variant over its paired baseline (rows with ``baseline``) are a separate, labelled table so an
interval of a difference never sits unlabelled beside absolute values.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from tabulate import tabulate

from .figures import PIPELINE_MARK, list_figures
from .io import atomic_write_text
from .engine.core import PROFILES
from .papers import registry
from .results import reference

SMOKE_BANNER, REHEARSE_BANNER = PROFILES["smoke"].banner, PROFILES["rehearse"].banner
RANDOM_WEIGHTS_BANNER = ("Some rows were computed with random-initialised weights (weights = random); those numbers "
                         "are NOT comparable with the paper's.")
CELL_LEGEND = ("Each cell reads **reproduced / paper (Δ)** with Δ = reproduced − paper, rounded to the digits "
               "the paper prints. `— / paper`: the paper's number for a row this run did not reproduce; a bare "
               "number: reproduced where the paper prints none; `n.r.`: not reported in the paper; "
               "`[n]`: footnote below the table.")
GAIN_TITLE = "Gain of variant over its baseline (variant − baseline; paired-bootstrap mean [95% CI])"
TEXT_COLUMNS = ["paper", "table", "method", "setting", "dataset", "metric", "measured_on", "baseline", "profile",
                "weights", "notes", "runs"]
NUMBER_COLUMNS = ["value", "n_seeds", "n_images", "gain", "gain_ci_low", "gain_ci_high"]
PAPER_FLAGS = ("TEXT CONTRADICTS TABLE", "SWAPPED", "possibly anomalous", "inferred", "not printed")
DEFAULT_DIGITS = {"PSNR": 2, "SSIM": 4, "LPIPS": 4, "FID": 2}
MAX_VALUE_COLUMNS = 10  # value columns per pivot block before the table is continued below


# ---------------------------------------------------------------------------------------------- inputs

def load_rows(out_root: str | Path, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The tidy rows (``rows`` if given, else ``<out_root>/results.csv``) with every schema column present,
    text columns as ``str`` (empty, not NaN) and number columns numeric.

    Rows in the older schema (``dataset`` = what was measured, ``paper_dataset`` = the paper's test set) are
    mapped onto the current one (``dataset`` = the paper's test set, ``measured_on`` = what was measured).
    """
    if rows is None:
        path = Path(out_root) / "results.csv"
        rows = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()
    df = rows.copy()
    if "paper_dataset" in df.columns and "measured_on" not in df.columns:
        df["measured_on"] = df["dataset"]
        df["dataset"] = df["paper_dataset"]
    for c in TEXT_COLUMNS:
        df[c] = df[c].fillna("").astype(str).str.strip() if c in df.columns else ""
        df.loc[df[c].isin(["nan", "None"]), c] = ""
    for c in NUMBER_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce") if c in df.columns else float("nan")
    return df[TEXT_COLUMNS + NUMBER_COLUMNS].reset_index(drop=True)


def load_status(out_root: str | Path, status: pd.DataFrame | None = None) -> pd.DataFrame:
    """The run status table: ``status`` if given, else ``<out_root>/status.csv``, else one row per folder
    holding an executed notebook (status unknown)."""
    if status is not None:
        return status.copy()
    path = Path(out_root) / "status.csv"
    if path.is_file():
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    found = sorted(p.parent.name for p in Path(out_root).glob("*/*.ipynb") if p.stem == p.parent.name)
    return pd.DataFrame({"notebook": found, "status": ["unknown"] * len(found)})


def split_setting(setting: str) -> list[str]:
    """``"multi-task; deraining; rain=High"`` -> its parts; a ``;`` inside parentheses does not split."""
    parts, depth, cur = [], 0, ""
    for ch in setting:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == ";" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def _digits(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def _num(value: float, digits: int, signed: bool = False) -> str:
    out = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    if signed and float(out) == 0:
        out = "+" + out.lstrip("+-")  # never print -0.00
    return out


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------------------------------------- one table

@dataclass
class Cell:
    text: str
    reproduced: bool = False


@dataclass
class Block:
    """A slice of a pivot: column groups ``(label, metrics)`` and the rows ``(method, setting)``."""
    groups: list[tuple[str, list[str]]]
    rows: list[tuple[str, str]]
    cells: list[list[Cell]]


@dataclass
class TableView:
    paper: str
    table: str
    condition: str
    row_setting: bool
    blocks: list[Block]
    gains: pd.DataFrame
    skipped: list[tuple[str, list[str]]]
    footnotes: list[str]
    measured: str


class _Footnotes:
    def __init__(self) -> None:
        self.items: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"


def _summary(values: pd.Series, what: str) -> str:
    vals = [v for v in pd.unique(values) if v == v and str(v) != ""]
    if not vals:
        return ""
    shown = [str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v) for v in vals]
    return f"{what} {', '.join(shown)}"


def _pack(widths: list[int], limit: int = MAX_VALUE_COLUMNS) -> list[list[int]]:
    """Split consecutive column groups of the given widths into the fewest blocks of about equal width
    (at most ``limit`` columns each unless one group alone is wider); returns the group indices per block."""
    total = sum(widths)
    n_blocks = max(1, -(-total // limit))
    target = total / n_blocks
    blocks: list[list[int]] = [[]]
    width = 0
    for i, w in enumerate(widths):
        if blocks[-1] and (width + w > limit or (width + w / 2 > target and len(blocks) < n_blocks)):
            blocks.append([])
            width = 0
        blocks[-1].append(i)
        width += w
    return blocks


def _components(cols: list, filled: set) -> list[list]:
    """Group the column keys that share a row (``filled`` holds ``(row, column)`` pairs): column groups
    whose rows never overlap, like DiffLoss Table 1's three task blocks, are printed as separate tables."""
    rows_of = {c: {r for r, c2 in filled if c2 == c} for c in cols}
    parts: list[tuple[list, set]] = []
    for c in cols:
        joined = [p for p in parts if p[1] & rows_of[c]]
        merged = ([x for p in joined for x in p[0]] + [c], set().union(rows_of[c], *(p[1] for p in joined)))
        parts = [p for p in parts if not any(p is j for j in joined)] + [merged]
    order = {c: i for i, c in enumerate(cols)}
    return sorted((sorted(p[0], key=order.get) for p in parts), key=lambda p: order[p[0]])


def build_table(paper: str, table: str, ref: pd.DataFrame, rep: pd.DataFrame) -> TableView:
    """Lay out one paper table (its reference rows ``ref`` and this run's rows ``rep``) as described in the
    module docstring."""
    both = pd.concat([ref[["method", "setting", "dataset"]], rep[["method", "setting", "dataset"]]])
    parts = {s: split_setting(s) for s in both["setting"].unique()}
    common = set.intersection(*(set(p) for p in parts.values())) if parts else set()
    all_sets = set(both["dataset"])
    sets_of: dict[str, set] = {}
    for setting, dataset in zip(both["setting"], both["dataset"], strict=True):
        for p in parts[setting]:
            sets_of.setdefault(p, set()).add(dataset)
    column_part = {p: len(all_sets) > 1 and s < all_sets for p, s in sets_of.items()}

    def keys(setting: str, method: str, dataset: str) -> tuple[tuple[str, str], tuple[str, str]]:
        rest = [p for p in parts[setting] if p not in common]
        row_set = "; ".join(p for p in rest if not column_part[p])
        col_set = "; ".join(p for p in rest if column_part[p])
        return (method, row_set), (col_set, dataset)

    row_order: list = []
    col_order: list = []
    metrics: dict = {}
    ref_cell: dict = {}
    rep_cell: dict = {}
    for src, store in ((ref, ref_cell), (rep, rep_cell)):
        for r in src.itertuples(index=False):
            rk, ck = keys(r.setting, r.method, r.dataset)
            if rk not in row_order:
                row_order.append(rk)
            if ck not in col_order:
                col_order.append(ck)
            metrics.setdefault(ck, [])
            if r.metric not in metrics[ck]:
                metrics[ck].append(r.metric)
            store[(rk, ck, r.metric)] = r  # a repeated key keeps the last row

    digits = {}
    for metric, g in ref[ref["value"] != ""].groupby("metric"):
        digits[metric] = int(g["value"].map(_digits).mode().iloc[0])

    notes = _Footnotes()
    skipped: dict[str, list[str]] = {}

    def cell(rk, ck, metric) -> Cell | None:
        p = ref_cell.get((rk, ck, metric))
        r = rep_cell.get((rk, ck, metric))
        if p is None and r is None:
            return None
        marks = []
        paper_txt = ""
        if p is not None:
            paper_txt = p.value or ("collapsed" if "collapsed" in p.notes else "n.r.")
            if any(f in p.notes for f in PAPER_FLAGS):
                marks.append(notes.mark(f"paper: {p.notes}"))
        if r is None:
            text = paper_txt if paper_txt in ("n.r.", "collapsed") else f"— / {paper_txt}"
            return Cell(text + "".join(" " + m for m in marks))
        is_skip = r.notes.lower().startswith("skipped")
        if is_skip:
            label = f"{rk[0]}" + (f" ({rk[1]})" if rk[1] else "") + (f" · {' · '.join(x for x in ck if x)}")
            skipped.setdefault(r.notes, [])
            if label not in skipped[r.notes]:
                skipped[r.notes].append(label)
        elif r.notes:
            marks.append(notes.mark(r.notes))
        if pd.isna(r.value):
            mine = "skipped" if is_skip else "—"
            text = f"{mine} / {paper_txt}" if paper_txt else mine
        elif p is not None and p.value:
            d = _digits(p.value)
            text = f"{_num(r.value, d)} / {p.value} ({_num(r.value - float(p.value), d, signed=True)})"
        else:
            mine = _num(r.value, digits.get(metric, DEFAULT_DIGITS.get(metric, 3)))
            text = f"{mine} / {paper_txt}" if paper_txt == "collapsed" else mine
        return Cell(text + "".join(" " + m for m in marks), reproduced=not pd.isna(r.value))

    blocks: list[Block] = []
    chunks = []
    for part in _components(col_order, {(rk, ck) for (rk, ck, _) in [*ref_cell, *rep_cell]}):
        chunks += [[part[i] for i in idx] for idx in _pack([len(metrics[ck]) for ck in part])]
    for chunk in chunks:
        rows, cells = [], []
        for rk in row_order:
            line = [cell(rk, ck, m) for ck in chunk for m in metrics[ck]]
            if any(c is not None for c in line):
                rows.append(rk)
                cells.append([c or Cell("") for c in line])
        groups = [(" · ".join(x for x in ck if x), metrics[ck]) for ck in chunk]
        blocks.append(Block(groups, rows, cells))

    gains = _gains(ref, rep, digits)
    measured_rows = rep[rep["value"].notna()]
    measured = "; ".join(s for s in (
        _summary(measured_rows["measured_on"], "measured on"), _summary(measured_rows["weights"], "weights"),
        _summary(measured_rows["n_seeds"], "seeds"), _summary(measured_rows["n_images"], "images per test set"),
    ) if s)
    return TableView(paper, table, "; ".join(p for p in split_setting(next(iter(parts), "")) if p in common),
                     any(rk[1] for rk in row_order), blocks, gains, list(skipped.items()), notes.items, measured)


def _gains(ref: pd.DataFrame, rep: pd.DataFrame, digits: dict) -> pd.DataFrame:
    """The variant-vs-baseline table: one line per variant row with a ``baseline``."""
    paper = {(r.method, r.setting, r.dataset, r.metric): r.value for r in ref.itertuples(index=False)}
    lines = []
    for r in rep[rep["baseline"] != ""].itertuples(index=False):
        d = digits.get(r.metric, DEFAULT_DIGITS.get(r.metric, 3))
        if pd.isna(r.gain):
            gain = "—"
        elif pd.isna(r.gain_ci_low) or pd.isna(r.gain_ci_high):
            gain = f"{_num(r.gain, d, True)} [no interval]"
        else:
            gain = f"{_num(r.gain, d, True)} [{_num(r.gain_ci_low, d, True)}, {_num(r.gain_ci_high, d, True)}]"
        pv, pb = paper.get((r.method, r.setting, r.dataset, r.metric), ""), \
            paper.get((r.baseline, r.setting, r.dataset, r.metric), "")
        paper_gain = _num(float(pv) - float(pb), max(_digits(pv), _digits(pb)), True) if pv and pb else "—"
        n = ", ".join(s for s in (_summary(pd.Series([r.n_images]), "images"),
                                  _summary(pd.Series([r.n_seeds]), "seeds")) if s)
        lines.append({"variant": r.method, "baseline": r.baseline,
                      "setting · test set": " · ".join(x for x in (r.setting, r.dataset) if x),
                      "metric": r.metric, "gain [95% CI]": gain, "paper gain": paper_gain, "pairs": n})
    return pd.DataFrame(lines, columns=["variant", "baseline", "setting · test set", "metric", "gain [95% CI]",
                                        "paper gain", "pairs"])


# ---------------------------------------------------------------------------------------------- the report

@dataclass
class _Paper:
    key: str
    tables: list[TableView]
    not_run: list[str]
    figures: list[dict]
    notebooks: list[str]


def _title(key: str) -> str:
    paper = registry().get(key)
    return paper.title if paper else key


def _banner(profile: str, rows: pd.DataFrame) -> str:
    if profile == "smoke":
        return SMOKE_BANNER
    if profile == "rehearse":
        return REHEARSE_BANNER
    if profile != "full":
        return f"PROFILE '{profile}' — not the full profile: these numbers are NOT comparable with the paper's."
    if (rows["weights"] == "random").any():
        return RANDOM_WEIGHTS_BANNER
    return ""


def _notebook_path(out_root: Path, name: str) -> str | None:
    nb = out_root / name / f"{name}.ipynb"
    return f"{name}/{name}.ipynb" if nb.is_file() else None


def _collect(out_root: Path, rows: pd.DataFrame, status: pd.DataFrame) -> list[_Paper]:
    ref = reference()
    notebooks = sorted({*map(str, status.get("notebook", pd.Series(dtype=str))),
                        *(p.parent.name for p in out_root.glob("*/*.ipynb") if p.stem == p.parent.name)})
    figures: dict[str, list[dict]] = {}
    for folder in sorted(p for p in out_root.iterdir() if (p / "figures").is_dir()) if out_root.is_dir() else []:
        for meta in list_figures(folder):
            meta["notebook"] = folder.name
            meta["rel"] = f"{folder.name}/figures/{meta['file']}"
            figures.setdefault(meta.get("paper") or folder.name, []).append(meta)
    keys = [k for k in registry() if k in set(rows["paper"]) | set(figures)
            or any(n.startswith(k) for n in notebooks)]
    keys += sorted((set(rows["paper"]) | set(figures)) - set(registry()) - {""})
    papers = []
    for key in keys:
        pref, prep = ref[ref["paper"] == key], rows[rows["paper"] == key]
        order = list(dict.fromkeys([*pref["table"], *prep["table"]]))
        done = set(prep["table"])
        views = [build_table(key, t, pref[pref["table"] == t], prep[prep["table"] == t]) for t in order if t in done]
        figs = sorted(figures.get(key, []), key=lambda m: (_natural(m.get("figure", "")), m.get("part", ""),
                                                           m["file"]))
        papers.append(_Paper(key, views, [t for t in order if t not in done], figs,
                             [n for n in notebooks if n.startswith(key)]))
    return papers


def write_report(out_root: str | Path, status: pd.DataFrame | None = None, profile: str = "smoke",
                 rows: pd.DataFrame | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``report_psnr.png`` into ``out_root``; returns ``report.md``.

    ``rows``: the tidy rows (default: ``<out_root>/results.csv``); ``status``: the run status table
    (default: ``<out_root>/status.csv``). Figures and executed notebooks are found under
    ``<out_root>/<notebook>/``. A banner heads both files when ``profile`` is not ``full`` or a row has
    ``weights == "random"``.
    """
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    rows = load_rows(out_root, rows)
    status = load_status(out_root, status)
    banner = _banner(profile, rows)
    papers = _collect(out_root, rows, status)
    scatter = _scatter(rows, out_root, bool(banner))
    atomic_write_text(out_root / "report.md", _markdown(profile, banner, status, papers, scatter, out_root))
    atomic_write_text(out_root / "report.html", _html(profile, banner, status, papers, scatter, out_root))
    return out_root / "report.md"


def _scatter(rows: pd.DataFrame, out_root: Path, stamp: bool) -> str | None:
    """Reproduced against printed PSNR, one panel per paper (seaborn); returns the file name or None."""
    ref = reference()
    ref = ref[ref["value"] != ""].assign(paper_value=lambda d: d["value"].astype(float)).drop(columns="value")
    d = rows[(rows["metric"] == "PSNR") & rows["value"].notna()].merge(
        ref[["paper", "table", "method", "setting", "dataset", "metric", "paper_value"]],
        on=["paper", "table", "method", "setting", "dataset", "metric"])
    if d.empty:
        return None
    import seaborn as sns
    from matplotlib.figure import Figure

    keys = list(dict.fromkeys(d["paper"]))
    fig = Figure(figsize=(4 * len(keys), 3.8))
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
        sub = d[d["paper"] == key]
        sns.scatterplot(data=sub, x="paper_value", y="value", hue="table", ax=ax)
        lo = min(sub["paper_value"].min(), sub["value"].min()) - 0.5
        hi = max(sub["paper_value"].max(), sub["value"].max()) + 0.5
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="reproduced = paper")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), title=key, xlabel="paper PSNR (dB)", ylabel="reproduced PSNR (dB)")
        ax.legend(fontsize=7, title="table", title_fontsize=7)
    fig.suptitle("Reproduced vs paper PSNR (dashed: equal)")
    if stamp:
        fig.text(0.5, -0.02, PIPELINE_MARK, ha="center", va="top", color="red", fontsize=9)
    fig.savefig(out_root / "report_psnr.png", dpi=80, bbox_inches="tight")
    return "report_psnr.png"


# ---------------------------------------------------------------------------------------------- markdown

def _md(text: object) -> str:
    """Escape text for a markdown table cell or paragraph."""
    s = " ".join(str(text).split())
    return re.sub(r"([\\`*_<>|])", r"\\\1", s)


def _md_table(header: list[str], body: list[list[str]]) -> str:
    return tabulate(body, headers=header, tablefmt="pipe", disable_numparse=True, stralign="left")


def _md_status(status: pd.DataFrame, out_root: Path) -> str:
    body = []
    for r in status.to_dict("records"):
        line = []
        for c in status.columns:
            v = "" if pd.isna(r[c]) else str(r[c])
            if c == "notebook":
                path = _notebook_path(out_root, v)
                line.append(f"[{_md(v)}]({quote(path)})" if path else _md(v) + " (no executed notebook)")
            else:
                line.append(_md(v))
        body.append(line)
    return _md_table([_md(c) for c in status.columns], body)


def _table_mark(profile: str, banner: str) -> str:
    """The line every table of a smoke or rehearse report carries (the banner's short form)."""
    from .figures import PIPELINE_MARK

    return f"{profile} profile, {PIPELINE_MARK}: not comparable with the paper" if banner else ""


def _md_view(v: TableView, mark: str = "") -> list[str]:
    out = [f"### {_md(v.table)}", ""] + ([f"*{_md(mark)}*", ""] if mark else [])
    if v.condition:
        out += [f"Setting of every row: {_md(v.condition)}", ""]
    for b in v.blocks:
        head = ["Method"] + (["Setting"] if v.row_setting else [])
        head += [_md(f"{label} · {m}" if label else m) for label, ms in b.groups for m in ms]
        body = [[_md(rk[0])] + ([_md(rk[1])] if v.row_setting else []) + [_md(c.text) for c in line]
                for rk, line in zip(b.rows, b.cells, strict=True)]
        out += [_md_table(head, body), ""]
    if v.measured:
        out += [f"Reproduced cells: {_md(v.measured)}.", ""]
    if not v.gains.empty:
        out += [f"**{v.table}: {GAIN_TITLE}**", "",
                _md_table([_md(c) for c in v.gains.columns],
                          [[_md(x) for x in r] for r in v.gains.itertuples(index=False)]), ""]
    if v.skipped:
        out += [f"**Skipped in {_md(v.table)}:**", ""]
        out += [f"- {_md(reason)} — {_md('; '.join(cells))}" for reason, cells in v.skipped] + [""]
    if v.footnotes:
        out += [f"Notes to {_md(v.table)}:", ""]
        out += [f"{i}. {_md(n)}" for i, n in enumerate(v.footnotes, 1)] + [""]
    return out


def _markdown(profile: str, banner: str, status: pd.DataFrame, papers: list[_Paper], scatter: str | None,
              out_root: Path) -> str:
    md = [f"# irlib reproduction report ({_md(profile)} profile)", ""]
    if banner:
        md += [f"> **{_md(banner)}**", ""]
    md += ["## Notebook runs", "", _md_status(status, out_root) if not status.empty else "No runs recorded.", ""]
    if scatter:
        md += ["## Reproduced vs paper (PSNR)", "", f"![Reproduced vs paper PSNR]({quote(scatter)})", ""]
    md += [CELL_LEGEND, ""]
    mark = _table_mark(profile, banner)
    for p in papers:
        md += [f"## {_md(_title(p.key))}", ""]
        if p.notebooks:
            links = [f"[{_md(n)}]({quote(path)})" for n in p.notebooks
                     if (path := _notebook_path(out_root, n))]
            md += ["Executed notebooks: " + (", ".join(links) if links else "none found"), ""]
        for v in p.tables:
            md += _md_view(v, mark)
        if p.not_run:
            md += [f"Paper tables with no rows in this run: {_md(', '.join(p.not_run))}.", ""]
        if p.figures:
            md += [f"### Figures ({_md(p.key)})", ""]
            for f in p.figures:
                title = f"{f.get('figure', '')} {f.get('part', '')}".strip()
                md += [f"**{_md(title)} — {_md(f.get('title', ''))}** ({_md(f['notebook'])})", ""]
                if Path(f["path"]).is_file():
                    md += [f"![{_md(f.get('title', ''))}]({quote(f['rel'])})", ""]
                else:
                    md += [f"*image missing: {_md(f['rel'])}*", ""]
                md += [f"*{_md(f.get('caption', ''))}*", ""]
    return "\n".join(md)


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:110em;color:#111}
table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #bbb;padding:2px 6px;font-size:12px;text-align:left;vertical-align:top}
table.pivot td,table.pivot th{white-space:nowrap}
th{background:#eee} td.rep{background:#eef6ff} .scroll{overflow-x:auto}
.banner{background:#fee;border:2px solid #c00;padding:1em;font-weight:bold}
.gains caption,.pivot caption{caption-side:top;text-align:left;font-weight:bold;padding:.3em 0}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:48em}
figure img{max-width:100%;border:1px solid #ccc} figcaption{font-size:13px}
.failed{color:#b00;font-weight:bold} .missing{color:#b00}
"""


def _e(text: object) -> str:
    return html.escape("" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text), quote=True)


def _href(path: str) -> str:
    return html.escape(quote(path), quote=True)


def _html_table(header: list[str], body: list[list[str]], cls: str, caption: str = "") -> str:
    """A table from already-escaped cell HTML."""
    cap = f"<caption>{caption}</caption>" if caption else ""
    head = "".join(f"<th>{h}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
    return (f"<div class='scroll'><table class='{cls}'>{cap}<thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


def _html_view(v: TableView, anchor: str, mark: str = "") -> list[str]:
    out = [f"<h3 id='{_e(anchor)}'>{_e(v.table)}</h3>"] + ([f"<p class='mark'>{_e(mark)}</p>"] if mark else [])
    if v.condition:
        out.append(f"<p>Setting of every row: {_e(v.condition)}</p>")
    for b in v.blocks:
        span = " rowspan='2'"
        top = f"<th{span}>Method</th>" + (f"<th{span}>Setting</th>" if v.row_setting else "")
        top += "".join(f"<th colspan='{len(ms)}'>{_e(label)}</th>" for label, ms in b.groups)
        sub = "".join(f"<th>{_e(m)}</th>" for _, ms in b.groups for m in ms)
        body = ""
        for rk, line in zip(b.rows, b.cells, strict=True):
            body += "<tr><th>" + _e(rk[0]) + "</th>" + (f"<td>{_e(rk[1])}</td>" if v.row_setting else "")
            body += "".join(f"<td class='rep'>{_e(c.text)}</td>" if c.reproduced else f"<td>{_e(c.text)}</td>"
                            for c in line) + "</tr>"
        out.append(f"<div class='scroll'><table class='pivot'><caption>{_e(v.table)}: reproduced / paper (Δ)"
                   f"{' — ' + _e(mark) if mark else ''}</caption><thead><tr>{top}</tr><tr>{sub}</tr></thead><tbody>{body}</tbody></table></div>")
    if v.measured:
        out.append(f"<p>Reproduced cells: {_e(v.measured)}.</p>")
    if not v.gains.empty:
        out.append(_html_table([_e(c) for c in v.gains.columns],
                               [[_e(x) for x in r] for r in v.gains.itertuples(index=False)], "gains",
                               f"{_e(v.table)}: {_e(GAIN_TITLE)}"))
    if v.skipped:
        items = "".join(f"<li>{_e(reason)} — {_e('; '.join(cells))}</li>" for reason, cells in v.skipped)
        out.append(f"<p><b>Skipped in {_e(v.table)}:</b></p><ul class='skipped'>{items}</ul>")
    if v.footnotes:
        items = "".join(f"<li>{_e(n)}</li>" for n in v.footnotes)
        out.append(f"<p>Notes to {_e(v.table)}:</p><ol class='notes'>{items}</ol>")
    return out


def _html(profile: str, banner: str, status: pd.DataFrame, papers: list[_Paper], scatter: str | None,
          out_root: Path) -> str:
    page = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
            f"<title>irlib reproduction report ({_e(profile)})</title><style>{_CSS}</style></head><body>",
            f"<h1>irlib reproduction report ({_e(profile)} profile)</h1>"]
    if banner:
        page.append(f"<p class='banner' id='banner'>{_e(banner)}</p>")
    page.append("<h2>Notebook runs</h2>")
    if status.empty:
        page.append("<p>No runs recorded.</p>")
    else:
        body = []
        for r in status.to_dict("records"):
            line = []
            for c in status.columns:
                v = "" if pd.isna(r[c]) else str(r[c])
                path = _notebook_path(out_root, v) if c == "notebook" else None
                if c == "notebook":
                    line.append(f"<a href='{_href(path)}'>{_e(v)}</a>" if path else f"{_e(v)} (no executed notebook)")
                elif c == "status" and v == "failed":
                    line.append(f"<span class='failed'>{_e(v)}</span>")
                else:
                    line.append(_e(v))
            body.append(line)
        page.append(_html_table([_e(c) for c in status.columns], body, "status"))
    if scatter:
        page.append(f"<h2>Reproduced vs paper (PSNR)</h2><img src='{_href(scatter)}' "
                    "alt='Reproduced vs paper PSNR' style='max-width:100%'>")
    page.append("<p>" + html.escape(CELL_LEGEND.replace("**", "").replace("`", "")) + "</p>")
    mark = _table_mark(profile, banner)
    for p in papers:
        page.append(f"<h2 id='{_e(p.key)}'>{_e(_title(p.key))}</h2>")
        if p.notebooks:
            links = [f"<a href='{_href(path)}'>{_e(n)}</a>" for n in p.notebooks
                     if (path := _notebook_path(out_root, n))]
            page.append("<p>Executed notebooks: " + (", ".join(links) if links else "none found") + "</p>")
        for v in p.tables:
            page += _html_view(v, f"{p.key}-{re.sub(r'[^A-Za-z0-9]+', '-', v.table)}", mark)
        if p.not_run:
            page.append(f"<p>Paper tables with no rows in this run: {_e(', '.join(p.not_run))}.</p>")
        if p.figures:
            page.append(f"<h3>Figures ({_e(p.key)})</h3>")
            for f in p.figures:
                title = f"{f.get('figure', '')} {f.get('part', '')}".strip()
                img = (f"<img src='{_href(f['rel'])}' alt='{_e(f.get('title', ''))}'>" if Path(f["path"]).is_file()
                       else f"<p class='missing'>image missing: {_e(f['rel'])}</p>")
                page.append(f"<figure>{img}<figcaption><b>{_e(title)} — {_e(f.get('title', ''))}</b> "
                            f"({_e(f['notebook'])}). {_e(f.get('caption', ''))}</figcaption></figure>")
    page.append("</body></html>")
    return "\n".join(page)
