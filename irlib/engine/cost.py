"""GPU-hour estimates of a plan's runs from the step costs measured on a GPU (``irlib/resources/measurements``).

Only measured networks get an estimate: the median step time of the matching bench variant (plain loss or
+SPN), scaled linearly by pixels per step (batch × patch²) when the run's batch or patch differ from the
measured ones, times the run's steps. Everything else is ``unknown`` — no number is invented. Evaluation and
data loading are not included. These are estimates, and say so wherever they are printed.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pandas as pd

from .spec import RunSpec


@dataclass(frozen=True)
class Measured:
    """Which bench rows measure a network: ``paper`` of the bench CSV, its plain and +SPN variants, and the
    batch / ground-truth patch side they were timed at."""

    net: str
    scale: int | None
    bench: str
    plain: str
    spn: str | None
    batch: int
    patch: int


# irlib.bench --scale paper: EDSR-light x4 at batch 16 with 48-px LR patches (192 px HR); IDT at batch 8 on
# 128-px patches; NAFNet-32 at batch 4 on 256-px patches.
MEASURED = (
    Measured("EDSR-light", 4, "spn", "L1", "L1 + SPN (4 neg, loop)", 16, 192),
    Measured("IDT", None, "spn-idt", "L1", "L1 + SPN (4 neg, loop)", 8, 128),
    Measured("NAFNet", None, "diffloss", "L2", None, 4, 256),
)


def measurements() -> pd.DataFrame:
    """Every committed measurement (one CSV per device), paper scale only."""
    frames = []
    for f in resources.files("irlib.resources").joinpath("measurements").iterdir():
        if f.name.endswith(".csv"):
            with f.open() as fh:
                frames.append(pd.read_csv(fh))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return df[df["scale"] == "paper"] if "scale" in df else df


def step_seconds(run: RunSpec, table: pd.DataFrame | None = None) -> tuple[float | None, str]:
    """(estimated seconds per training step, how it was obtained) or (None, why not)."""
    from .runner import effective_schedule

    table = measurements() if table is None else table
    kw = dict(run.net_kw)
    names = {t.name for t in run.terms}
    for m in MEASURED:
        if m.net != run.net or (m.scale is not None and kw.get("scale") != m.scale):
            continue
        extra = names - {"l1", "l1_pm1", "mse", "mse_pm1", "psnr", "spn"}
        if extra:
            return None, f"no measurement of {run.net} with {', '.join(sorted(extra))}"
        variant = m.spn if "spn" in names else m.plain
        if variant is None:
            return None, f"no measurement of {run.net} with SPN"
        rows = table[(table["paper"] == m.bench) & (table["variant"] == variant)]
        if rows.empty:
            return None, f"bench rows {m.bench}/{variant} missing"
        s = float(rows["s_per_step"].median())
        sched = effective_schedule(run)
        factor = (sched.batch * sched.patch ** 2) / (m.batch * m.patch ** 2)
        how = f"{variant} on {rows['device'].iloc[0]} (median of {len(rows)} runs)"
        if abs(factor - 1) > 1e-9:
            how += f", scaled x{factor:.3g} from batch {m.batch} at {m.patch} px"
        return s * factor, how
    return None, f"no step cost measured for {run.net}"


def run_costs(runs: list[RunSpec]) -> pd.DataFrame:
    """One line per run: steps, estimated seconds per step and GPU-hours (NaN = unknown), and the basis."""
    from .runner import effective_schedule

    table = measurements()
    out = []
    for r in runs:
        s, how = step_seconds(r, table)
        steps = effective_schedule(r).steps
        out.append({"key": r.key(), "label": r.label or r.net, "net": r.net, "steps": steps,
                    "s_per_step_est": s, "gpu_hours_est": (s * steps / 3600) if s is not None else float("nan"),
                    "basis": how})
    return pd.DataFrame(out)
