"""``irlib eval``: a released checkpoint, evaluated as published.

The weights manifest (``data_manifests/weights/NAME.yaml``) names the network that loads the checkpoint and
the reference rows (``used_by``: paper, table, method, setting) where its authors' number stands. The test set
and the metric convention of each of those rows come from the paper's plan — the same definitions the
retrained rows use (SR: Y channel, scale cropped; deraining: Y; NAFNet on GoPro: TLC; dehazing: RGB) — so a
released number and a retrained one are measured identically. Rows are written with ``weights=released``;
the report sets them beside the paper's number for that baseline.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch


def released_evals(m: dict) -> list[tuple[dict, object]]:
    """``[(reference key dict, EvalSpec, zoo network name), …]`` for every ``used_by`` entry of manifest ``m``,
    from the full plans (the network name gives the evaluation padding)."""
    from . import plan
    from .engine.spec import Measure

    out = []
    for use in m.get("used_by", []):
        p = plan.build(use["paper"], "full")
        for row in p.rows:
            k = row.key
            if (k.table, k.method) == (use["table"], use["method"]) and k.setting == use.get("setting", k.setting) \
                    and isinstance(row.source, Measure) and k.metric in ("PSNR", "SSIM"):
                out.append((k.as_dict(), row.source.eval, row.source.runs[0].net))
    return out


def load_released(m: dict, checkpoint: str | Path) -> torch.nn.Module:
    from .models.release import load_release
    from .weights import resolve_network

    model = resolve_network(m)(**(m.get("args") or {}))
    return load_release(model, checkpoint).eval()


@torch.no_grad()
def evaluate_released(name: str, *, data_root: str | Path = "data", weights_root: str | Path | None = None,
                      checkpoint: str | Path | None = None, out: str | Path = "reports/released", device: str = "cpu",
                      limit: int | None = None) -> pd.DataFrame:
    """Evaluate released checkpoint ``name`` on every paper test set it has a reference row for; write
    ``<out>/results.csv`` (appending to rows already there for other checkpoints) and return the rows."""
    import dataclasses

    from .data import DatasetError
    from .metrics import measure
    from .engine.runner import test_pairs
    from .train import padded_forward
    from .weights import load_weight_manifest, weights_path

    m = load_weight_manifest(name)
    evals = released_evals(m)
    if not evals:
        raise DatasetError(f"{name}: none of its used_by rows is a measured row of a paper's plan; nothing to evaluate")
    ckpt = Path(checkpoint) if checkpoint else weights_path(m, Path(weights_root) if weights_root else Path(data_root) / "weights")
    if not ckpt.is_file():
        raise DatasetError(f"{name}: checkpoint {ckpt} not found; run `irlib weights fetch {name}` or pass --checkpoint "
                           f"({m.get('manual') or m.get('url')})")
    model = load_released(m, ckpt).to(device)
    rows, done = [], {}
    from .models import zoo

    for key, ev, net in evals:
        ts = dataclasses.replace(ev.testset, limit=limit)
        if (ts, ev.channel, ev.crop, ev.forward) not in done:
            pairs = test_pairs(ts, str(data_root))
            fwd = _forward(ev, model)
            per = {"PSNR": [], "SSIM": []}
            for lq, gt in pairs:
                y = padded_forward(fwd, lq[None].to(device), zoo.pad(net), gt.shape[-2:]).clamp(0, 1).float().cpu()
                r = measure(y, gt[None], channel=ev.channel, crop_border=ev.crop)
                per["PSNR"].append(float(r["PSNR"][0]))
                per["SSIM"].append(float(r["SSIM"][0]))
            done[(ts, ev.channel, ev.crop, ev.forward)] = per
        per = done[(ts, ev.channel, ev.crop, ev.forward)]
        rows.append({**key, "value": float(torch.tensor(per[key["metric"]]).mean()), "measured_on": ev.testset.dataset,
                     "n_seeds": 0, "n_images": len(per[key["metric"]]), "baseline": "", "profile": "released",
                     "weights": "released", "notes": f"released checkpoint {ckpt.name} ({m.get('title', name)})",
                     "runs": ""})
    df = pd.DataFrame(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.csv"
    if path.is_file():
        old = pd.read_csv(path, keep_default_na=False, na_values=[""])
        old = old[~old.notes.astype(str).str.contains(f"released checkpoint {ckpt.name} ", regex=False)]
        df = pd.concat([old, df], ignore_index=True)
    tmp = out / ".results.csv.partial"
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return df[df.notes.astype(str).str.contains(ckpt.name, regex=False)]


def _forward(ev, model):
    if ev.forward == "tlc":
        from .models.nafnet import tlc_forward

        return lambda x: tlc_forward(model, {"lq": x})
    return model
