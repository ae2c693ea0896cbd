"""TextPromptIR's plan against the paper: which rows, from which runs, on which data, under which conventions;
and one small selection rehearsed end to end on synthetic data."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from irlib import plan
from irlib.engine.spec import Average, Measure, RowKey
from irlib.results import reference

KEY = ["paper", "table", "method", "setting", "dataset", "metric"]


@pytest.fixture(scope="module")
def full():
    return plan.build("textpromptir", "full")


def _runs(p, table, method="TextPromptIR"):
    return {r.key(): r for row in p.rows if row.key.table == table and row.key.method == method
            and isinstance(row.source, Measure) for r in row.source.runs}


def test_planned_rows_are_exactly_the_references_own_printed_rows(full):
    ref = reference("textpromptir")
    cited = {(t, m) for t, (ms, _) in full.cited.items() for m in ms}
    own = ref[[(t, m) not in cited for t, m in zip(ref.table, ref.method)]]
    printed, dashes = own[own.value != ""], own[own.value == ""]
    frame = full.frame()
    planned, extra = frame[~frame.extra], frame[frame.extra]
    assert planned.groupby("table").size().to_dict() == printed.groupby("table").size().to_dict() == {
        "Table 1": 12, "Table 2": 12, "Table 3": 40, "Table 4": 20}
    assert set(map(tuple, planned[KEY].values)) == set(map(tuple, printed[KEY].values))
    # the '-' cells of Table 3 (task not in the mix) are excluded, each with its reason, not planned
    assert {tuple(e.key.as_dict().values()) for e in full.excluded} == set(map(tuple, dashes[KEY].values))
    assert len(dashes) == 30 and all("not in the" in e.reason for e in full.excluded)
    assert "Restormer" in full.cited["Table 2"][0] and "PromptIR" in full.cited["Table 1"][0]
    # Fig. 10 (a chart in the paper): mean and s.d. over the repetitions per test column, as extra rows
    assert set(extra.table) == {"Fig. 10"} and len(extra) == 5 * 2 * 2
    assert set(extra.dataset) == {"CBSD68", "Rain100L", "SOTS"}


def test_eight_trainings_shared_between_tables(full):
    runs = full.runs()
    assert len(runs) == 8 and len({r.key() for r in runs}) == 8
    aio = _runs(full, "Table 1")
    assert len(aio) == 1
    assert _runs(full, "Table 4") == aio
    assert {k for k, r in _runs(full, "Table 3").items() if len(r.train) == 4} == set(aio)
    single = _runs(full, "Table 2")
    # single-task = one model per degradation (noise at all three levels together), none shared with all-in-one
    assert len(single) == 3 and not set(single) & set(aio)
    assert sorted(sorted({s.task for s in r.train}) for r in single.values()) == [
        ["haze"], ["noise15|noise25|noise50"], ["rain"]]
    assert set(single) <= set(_runs(full, "Table 3"))
    (a,) = aio.values()
    # BSD400 and WED consecutive with one task (pooled into one clean set, noise level drawn per sample)
    assert [(s.dataset, s.task, s.subset) for s in a.train] == [
        ("bsd400:train", "noise15|noise25|noise50", None), ("wed:train", "noise15|noise25|noise50", None),
        ("rain100l:train", "rain", None), ("reside_ots:train", "haze", 72_135)]


def test_text_encoders_and_the_ablation_without_guidance(full):
    wo = _runs(full, "Table 4", "TextPromptIR w.o. SGI")
    assert len(wo) == 1
    (w,) = wo.values()
    assert w.forward == "" and w.text_encoder == "" and dict(w.net_kw) == {"use_text": False}
    (a,) = _runs(full, "Table 1").values()
    assert w.replace(forward="text", text_encoder=a.text_encoder, net_kw=()) == a  # only the guidance differs
    text = [r for r in full.runs() if r.key() != w.key()]
    assert all(r.forward == "text" and r.text_encoder == "task-bert:bert-base-uncased" for r in text)
    smoke = plan.build("textpromptir", "smoke")
    assert all(r.text_encoder == "" for r in smoke.runs())          # the offline MiniLM
    assert len(smoke.runs()) == 8 and {s.dataset for r in smoke.runs() for s in r.train} == {"offline"}


def test_avg_rows_average_exactly_the_five_per_set_rows(full):
    rows = {r.key: r for r in full.rows}
    avgs = [r for r in full.rows if isinstance(r.source, Average)]
    assert sorted((r.key.table, r.key.metric) for r in avgs) == [
        ("Table 1", "PSNR"), ("Table 1", "SSIM"), ("Table 2", "PSNR"), ("Table 2", "SSIM")]
    for r in avgs:
        parts = r.source.parts
        k = r.key
        same = [key for key, row in rows.items() if isinstance(row.source, Measure) and
                (key.table, key.method, key.metric) == (k.table, k.method, k.metric)]
        assert all(isinstance(p, RowKey) for p in parts) and len(set(parts)) == 5
        assert set(parts) == set(same)
    # the reference's printed averages are the plain mean of the five printed cells
    ref = reference("textpromptir")
    for (t, m, metric), g in ref[ref.table.isin(["Table 1", "Table 2"])].groupby(["table", "method", "metric"]):
        cells = g[g.dataset != "Avg"].value.astype(float)
        assert len(cells) == 5
        assert abs(cells.mean() - float(g[g.dataset == "Avg"].value.iloc[0])) <= (0.01 if metric == "PSNR" else 0.001) + 1e-9


def test_metric_conventions_and_test_sets(full):
    evs = {(m.eval.testset.dataset, m.eval.testset.task, m.eval.channel, m.eval.crop) for m in full.measures()}
    assert evs == {("cbsd68:test", f"noise{n}", "rgb", 0) for n in (15, 25, 50)} | {
        ("sr_benchmark:Urban100", f"noise{n}", "rgb", 0) for n in (15, 25, 50)} | {
        ("rain100l:test", "rain", "rgb", 0), ("reside_sots:outdoor", "haze", "rgb", 0)}
    sots = [r for r in full.rows if r.key.dataset == "SOTS" and not r.extra]
    assert sots and all("OTS" in r.notes for r in sots)
    assert [f.figure for f in full.figures] == [f"Fig. {i}" for i in (2, 4, 5, 6, 7, 8, 9, 10)]


def test_rehearsal_of_table_4_end_to_end(tmp_path):
    """Table 4's two full-size runs (2 steps) on synthetic data in the real layouts, evaluated and gathered. To
    stay fast the encoder is the offline MiniLM instead of the rehearsal's random BERT-base fine-tuned for 2 steps
    (that path is the FeatureBank's; the whole rehearsal runs it)."""
    from irlib.data.splits import synth

    root = tmp_path / "data"
    synth(root, n=2, side=64, only=["bsd400", "wed", "rain100l", "reside_ots", "cbsd68", "reside_sots"])
    profile = dataclasses.replace(plan.get_profile("rehearse"), text_encoder="")
    p = plan.build("textpromptir", profile).select(["Table 4"])
    store = plan.RunStore(tmp_path / "runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # small ops: extra OpenMP threads only wait on each other on a shared CPU
    try:
        status = plan.execute(p, store, plan.Context(root, store.root), executor="inline")
    finally:
        torch.set_num_threads(threads)
    assert (status.state == "done").all(), status.error.tolist()
    rows = plan.gather(p, store)
    assert len(rows) == 20 and rows.value.notna().all()
    assert np.isfinite(rows.value).all() and (rows.n_images == 2).all()
    ssim = rows[rows.metric == "SSIM"].value
    assert ((ssim > -1) & (ssim <= 1)).all()
    ours = rows[rows.method == "TextPromptIR"]
    assert (ours.baseline == "TextPromptIR w.o. SGI").all() and ours.gain.notna().all()
    # the all-in-one data: one pooled BSD400+WED source drawing all three noise levels, Rain100L, OTS
    from irlib.engine.runner import effective_schedule, training_batches

    (aio,) = {r.key(): r for r in p.runs() if r.forward == "text"}.values()
    batches = training_batches(aio, str(root), effective_schedule(aio))
    assert len(batches.sources) == 3 and len(batches.sources[0].images) == 4
    tasks = [batches(k)["task"] for k in range(120)]
    kinds = [("noise" if t[0].startswith("noise") else t[0]) for t in tasks]
    shares = {k: kinds.count(k) / len(kinds) for k in ("noise", "rain", "haze")}
    assert abs(shares["haze"] - 0.46) < 0.12 and abs(shares["rain"] - 0.25) < 0.12   # the release's shares
    assert {t for ts in tasks if ts[0].startswith("noise") for t in ts} == {"noise15", "noise25", "noise50"}
