"""SPN Fig. 2a: PSNR against parameter count for the retrained lightweight SR networks, drawn from gathered rows
and the trained networks; the other methods of the paper's figure are not invented."""
import json

import pandas as pd
import torch.nn as nn

from irlib import plan
from irlib.engine.drawing import FigureContext, draw
from irlib.papers.spn.figures import NOT_DRAWN


class _Ctx(FigureContext):
    """The figure's context with stand-in networks of known size instead of the store's trained ones."""

    sizes = (10, 10, 20, 20)

    def model(self, i: int):
        return nn.Linear(self.sizes[i], 1000, bias=False)   # sizes[i] * 1000 parameters


def test_fig_2a_is_planned_on_the_lightweight_x4_runs_and_draws_their_points(tmp_path):
    spec = next(f for f in plan.build("spn", "full").figures if f.figure == "Fig. 2a")
    assert [r.label for r in spec.runs] == ["EDSR-light x4", "EDSR-light x4+SPN", "SwinIR-light x4",
                                            "SwinIR-light x4+SPN"]
    names = dict(spec.kw)["names"]
    rows = pd.DataFrame({"table": "Table 1", "setting": "x4", "dataset": "Manga109", "metric": "PSNR",
                         "method": list(names) + ["SwinIR"], "value": [30.1, 30.3, 30.5, float("nan"), 31.0]})
    import matplotlib.pyplot as plt

    ctx = _Ctx(spec, None, rows, tmp_path, "data", "cpu", None, "full")
    open_before = set(plt.get_fignums())
    (png,) = draw(spec, ctx)
    meta = json.loads(png.with_suffix(".json").read_text())
    assert png.is_file() and meta["figure"] == "Fig. 2a" and NOT_DRAWN in meta["caption"]
    assert set(plt.get_fignums()) == open_before   # its own figure closed after saving


def test_fig_2a_plots_parameters_in_millions_and_skips_unfinished_runs(tmp_path, monkeypatch):
    spec = next(f for f in plan.build("spn", "full").figures if f.figure == "Fig. 2a")
    names = dict(spec.kw)["names"]
    rows = pd.DataFrame({"table": "Table 1", "setting": "x4", "dataset": "Manga109", "metric": "PSNR",
                         "method": list(names), "value": [30.1, 30.3, 30.5, float("nan")]})
    seen = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.scatter
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", lambda ax, x, y, **kw: seen.append((x[0], y[0])) or real(ax, x, y, **kw))
    draw(spec, _Ctx(spec, None, rows, tmp_path, "data", "cpu", None, "full"))
    assert seen == [(0.01, 30.1), (0.01, 30.3), (0.02, 30.5)]   # the NaN (unfinished) SwinIR-light+SPN is left out
