"""Saving the notebooks' figures with the metadata the report needs.

Every figure is written as ``<out_dir>/figures/<paper>_<figure-slug>[_<part>].png`` with a JSON sidecar
``{paper, figure, title, caption, file, smoke}``; the report embeds each PNG under its caption. In the
smoke and rehearse profiles the networks are random, so the image is stamped "random weights — pipeline
check" and the caption says so.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

PIPELINE_MARK = "random weights — pipeline check"


def slug(text: str) -> str:
    """``"Fig. 3b"`` -> ``"fig3b"``: a file-name-safe lower-case form."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def save_figure(fig, out_dir: str | Path, *, figure: str, paper: str, title: str, caption: str,
                smoke: bool, part: str = "", dpi: int = 90) -> Path:
    """Save a matplotlib figure and its sidecar; returns the PNG path.

    ``figure`` is the paper's label (``"Fig. 4"``), ``title`` goes on the figure, ``caption`` is one
    sentence saying what it shows; ``smoke=True`` stamps :data:`PIPELINE_MARK` on it. Both files are written
    atomically (temporary name, then rename), so a crash never leaves half an image behind.
    """
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{paper}_{slug(figure)}" + (f"_{slug(part)}" if part else "")
    if not fig.texts or all(t.get_text() != title for t in fig.texts):
        fig.suptitle(title)
    if smoke:
        fig.text(0.99, 0.01, PIPELINE_MARK, ha="right", va="bottom", color="red", fontsize=9, alpha=0.8)
        caption = f"{caption} ({PIPELINE_MARK}: not comparable with the paper)"
    png = folder / f"{stem}.png"
    tmp = folder / f".{stem}.png.partial"
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    os.replace(tmp, png)
    meta = {"paper": paper, "figure": figure, "part": part, "title": title, "caption": caption,
            "file": png.name, "smoke": bool(smoke)}
    side = folder / f".{stem}.json.partial"
    side.write_text(json.dumps(meta, indent=1))
    os.replace(side, folder / f"{stem}.json")
    return png


def list_figures(out_dir: str | Path) -> list[dict]:
    """The sidecars under ``<out_dir>/figures`` (sorted by file name), each with an absolute ``path``."""
    folder = Path(out_dir) / "figures"
    out = []
    for side in sorted(folder.glob("*.json")):
        meta = json.loads(side.read_text())
        meta["path"] = str(folder / meta["file"])
        out.append(meta)
    return out
