"""Before anything trains: every dataset and every pretrained weight the selected plans need, and whether it
is here (``irlib doctor``, and the first step of ``irlib reproduce``).

One table lists each item once with what needs it, its state (``present``, ``missing`` — fetchable with
``irlib data fetch`` / ``irlib weights fetch`` —, or ``manual`` — behind a form or a drive, with the layout to
unpack it into) and a hint. Weights honour ``TORCH_HOME``, ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``
(:func:`irlib.weights.weights_status`). The smoke and rehearse profiles use random weights: only their data is
checked.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from .spec import Average, Measure, RunSpec, Study

if TYPE_CHECKING:
    from .core import Plan

# which weights manifest (data_manifests/weights/NAME.yaml) a term, network or metric needs
TERM_WEIGHTS = {"spn": "vgg19_imagenet", "cr": "vgg19_imagenet", "perceptual": "vgg16_imagenet",
                "diffloss": "adm_256_uncond", "dpc": "dinov2_vits14"}
NET_WEIGHTS = {"DINO-IR": "dinov2_vits14"}
METRIC_WEIGHTS = {"LPIPS": "alexnet_lpips", "FID": "inception_v3_imagenet"}
TEXT_WEIGHTS = {"bert-base-uncased": "bert_base_uncased"}


def _run_weights(r: RunSpec) -> set[str]:
    out = {TERM_WEIGHTS[t.name] for t in r.terms if t.name in TERM_WEIGHTS}
    if r.net in NET_WEIGHTS and dict(r.net_kw).get("use_psf", True):
        out.add(NET_WEIGHTS[r.net])
    base = r.text_encoder.removeprefix("task-bert:") if r.forward == "text" else ""
    if base in TEXT_WEIGHTS:
        out.add(TEXT_WEIGHTS[base])
    return out


def row_measures(row) -> list[Measure]:
    """The measurements behind a row (itself, or the unnamed parts of an average)."""
    src = row.source
    if isinstance(src, Measure):
        return [src]
    return [x[0] for x in getattr(src, "parts", ()) if isinstance(x, tuple)]


def row_runs(row) -> list[RunSpec]:
    runs = [r for m in row_measures(row) for r in m.runs + m.baseline]
    return runs + list(getattr(getattr(row.source, "study", None), "deps", ()))


def needed_weights(plans: Sequence[Plan]) -> dict[str, set[str]]:
    """Weights manifest name -> the paper/tables that need it (pretrained profiles only)."""
    out: dict[str, set[str]] = {}
    for p in plans:
        if p.profile.weights != "pretrained":
            continue
        for row in p.rows:
            src = row.source
            runs = row_runs(row)
            names = set().union(*(_run_weights(r) for r in runs)) if runs else set()
            if row_measures(row) and row.key.metric in METRIC_WEIGHTS:
                names.add(METRIC_WEIGHTS[row.key.metric])
            for study in ([src.study] if hasattr(src, "study") else []):
                names.update(dict(study.kw).get("weights", ()))
            for n in names:
                out.setdefault(n, set()).add(f"{p.paper} {row.key.table}")
    return out


def _run_refs(r: RunSpec) -> set[str]:
    refs = {s.dataset for s in r.train} | {v.dataset for v in dict(r.select).values() if hasattr(v, "dataset")}
    for d in r.deps():
        refs |= _run_refs(d)
    return refs


def refs_in(kw) -> set[str]:
    """Data references (``manifest:split`` of an existing manifest) among a figure's or study's arguments."""
    from ..data.splits import all_splits

    known = {sp.ref for sp in all_splits()}
    out: set[str] = set()
    stack = [kw]
    while stack:
        v = stack.pop()
        if isinstance(v, (tuple, list)):
            stack.extend(v)
        elif isinstance(v, str) and v in known:
            out.add(v)
        elif isinstance(getattr(v, "dataset", None), str) and v.dataset in known:   # a TestSet or Source
            out.add(v.dataset)
    return out


def _measure_refs(m: Measure) -> set[str]:
    return {m.eval.testset.dataset}.union(*(_run_refs(r) for r in m.runs + m.baseline))


def needed_data(plans: Sequence[Plan]) -> dict[str, set[str]]:
    """Data reference (``manifest:split``) -> the paper/tables that read it."""

    out: dict[str, set[str]] = {}
    for p in plans:
        for row in p.rows:
            src = row.source
            if isinstance(src, (Measure, Average)):
                refs = set().union(set(), *(_measure_refs(m) for m in row_measures(row)))
            elif isinstance(src, Study):
                refs = set().union(set(), *(_run_refs(r) for r in src.study.deps)) | refs_in(src.study.kw)
            else:
                refs = set()
            for ref in refs - {"offline"}:
                out.setdefault(ref, set()).add(f"{p.paper} {row.key.table}")
        for f in p.figures:
            refs = ({f.testset.dataset} if f.testset else set()).union(*(_run_refs(r) for r in f.runs)) | refs_in(f.kw)
            for st in f.studies:
                refs |= refs_in(st.kw).union(*(_run_refs(r) for r in st.deps))
            for ref in refs - {"offline"}:
                out.setdefault(ref, set()).add(f"{p.paper} {f.figure}")
    return out


def data_state(ref: str, data_root: str | Path) -> tuple[str, str]:
    """(``present`` | ``missing`` | ``manual``, message) for one data reference."""
    from ..data import DatasetError
    from ..data.splits import get_split, split_files

    sp = get_split(ref)
    try:
        if sp.kind == "cub":
            from ..data.cub import load_cub

            load_cub(Path(data_root) / sp.manifest)
        else:
            split_files(data_root, ref)
        return "present", ""
    except DatasetError as e:
        from ..data.fetch import load_manifest

        m = load_manifest(sp.manifest)
        manual = any(f.get("url") is None for f in m.get("files", []))
        layout = f"lq {sp.lq} / gt {sp.gt}" if sp.lq else f"images {sp.gt}"
        hint = (f"manual download: {m.get('manual', '')} — layout under {Path(data_root) / sp.manifest}: {layout}"
                if manual else f"irlib data fetch {sp.manifest} --root {data_root}")
        return ("manual" if manual else "missing"), f"{str(e).split(';')[0]} — {hint}"


def preflight(plans: Sequence[Plan], data_root: str | Path, weights_root: str | Path | None = None) -> pd.DataFrame:
    """One line per needed dataset split and weight: item, kind, needed_by, state, detail."""
    from ..weights import weights_status

    rows = []
    for ref, users in sorted(needed_data(plans).items()):
        state, detail = data_state(ref, data_root)
        rows.append({"item": ref, "kind": "data", "needed_by": ", ".join(sorted(users)), "state": state, "detail": detail})
    wroot = Path(weights_root) if weights_root else Path(data_root) / "weights"
    for name, users in sorted(needed_weights(plans).items()):
        st = weights_status(name, wroot)
        detail = st.get("hint", "") if st["state"] != "present" else str(st.get("where", ""))
        rows.append({"item": name, "kind": "weights", "needed_by": ", ".join(sorted(users)),
                     "state": st["state"], "detail": detail})
    return pd.DataFrame(rows, columns=["item", "kind", "needed_by", "state", "detail"])


def missing_refs(table: pd.DataFrame) -> set[str]:
    return set(table[(table.kind == "data") & (table.state != "present")].item)


def describe(table: pd.DataFrame, width: int = 60) -> str:
    """The preflight as text: one line per item (state, kind, what needs it), then what to do for each missing one."""
    if table.empty:
        return "nothing to check"
    shown = table.assign(needed_by=table.needed_by.map(lambda s: s if len(s) <= width else s[: width - 1] + "…"))
    lines = [shown[["item", "kind", "state", "needed_by"]].to_string(index=False)]
    todo = table[table.state != "present"]
    if len(todo):
        lines.append("")
        lines += [f"- {r.item} ({r.state}): {r.detail}" for r in todo.itertuples()]
    lines.append(f"{len(table) - len(todo)} of {len(table)} inputs present")
    return "\n".join(lines)
