"""The plans against the papers: every reference row is planned (under the reference's exact key), cited from
other work, or excluded with a reason — and nothing else is planned."""
import pandas as pd
import pytest

from irlib import plan
from irlib.results import reference

KEY = ["paper", "table", "method", "setting", "dataset", "metric"]


@pytest.mark.parametrize("paper", plan.PAPERS)
def test_full_plan_covers_every_own_row(paper):
    try:
        p = plan.build(paper, "full")
    except ModuleNotFoundError:
        pytest.skip(f"no plan for {paper} yet")
    ref = reference(paper)
    refkeys = set(map(tuple, ref[KEY].values))
    frame = p.frame()
    planned = set(map(tuple, frame[~frame.extra][KEY].values))
    assert planned <= refkeys, f"planned rows not in the reference: {sorted(planned - refkeys)[:5]}"
    extra = frame[frame.extra]
    assert not set(extra.table) & set(ref.table), "extra rows must not sit in a table the paper prints numbers for"
    excluded = {tuple(e.key.as_dict().values()) for e in p.excluded}
    assert all(e.reason for e in p.excluded)
    cited = {k for k in refkeys if k[2] in p.cited.get(k[1], ((), ""))[0]}
    assert not planned & excluded and not planned & cited and not excluded & cited
    missing = refkeys - planned - excluded - cited
    assert not missing, f"{len(missing)} reference rows neither planned, cited nor excluded: {sorted(missing)[:8]}"


@pytest.mark.parametrize("paper", plan.PAPERS)
def test_every_reference_row_has_one_class_and_cited_rows_a_source(paper):
    """Three classes of rows: the paper's own (method, baselines, ablations), comparisons (other methods the
    authors ran in their setting) and cited (copied from other work, with the source the paper names)."""
    p = plan.build(paper, "full")
    classes = p.row_classes(reference(paper))
    assert (classes.status != "unaccounted").all()
    assert set(classes["class"]) <= {"own", "comparison", "cited"}
    cited = classes[classes["class"] == "cited"]
    assert (cited.status == "cited").all() and (cited.cited_from.str.len() > 0).all()
    assert (classes[classes["class"] != "cited"].cited_from == "").all()
    frame = p.frame()
    assert set(frame.kind) <= {"own", "comparison"}
    assert not any("trained and evaluated by" in why for _, why in p.cited.values()), "a measured row declared cited"


@pytest.mark.parametrize("paper", plan.PAPERS)
def test_rehearsal_plans_exactly_the_full_rows_and_smoke_a_subset(paper):
    try:
        full = plan.build(paper, "full")
    except ModuleNotFoundError:
        pytest.skip(f"no plan for {paper} yet")
    rehearse = plan.build(paper, "rehearse")
    pd.testing.assert_frame_equal(full.frame()[KEY], rehearse.frame()[KEY])
    assert [f.figure for f in full.figures] == [f.figure for f in rehearse.figures]
    assert all(r.limits is not None and r.weights == "random" for r in rehearse.runs())
    smoke = plan.build(paper, "smoke")
    assert set(map(tuple, smoke.frame()[KEY].values)) <= set(map(tuple, full.frame()[KEY].values))
    assert all(r.size == "tiny" and r.train[0].dataset == "offline" for r in smoke.runs())
