"""irlib.report: the paper-layout pivots, gains, notes, figures and links, in markdown and in a real browser."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from irlib.figures import save_figure
from irlib.report import (GAIN_TITLE, RANDOM_WEIGHTS_BANNER, REHEARSE_BANNER, build_table, load_rows,
                          split_setting, write_report)
from irlib.report import SMOKE_BANNER
from irlib.results import reference

CHROMIUM = "/usr/bin/chromium"
SKIP_REASON = "skipped: EDSR-light+SPN x4 Urban100 not under data_root"
NOTE = "measured on 2 synthetic images per set"
ERROR = "RuntimeError: <script>window.pwned=1</script> | bad"


def _row(paper, table, method, setting, dataset, metric, value, **kw) -> dict:
    row = {"paper": paper, "table": table, "method": method, "setting": setting, "dataset": dataset,
           "metric": metric, "value": value, "measured_on": "synthetic", "n_seeds": 1, "n_images": 2,
           "baseline": "", "gain": None, "gain_ci_low": None, "gain_ci_high": None, "profile": "rehearse",
           "weights": "random", "notes": "", "runs": ""}
    row.update(kw)
    return row


ROWS = [
    _row("spn", "Table 1", "EDSR-light", "x4", "Set14", "PSNR", 28.50),
    _row("spn", "Table 1", "EDSR-light", "x4", "Set14", "SSIM", 0.7790),
    _row("spn", "Table 1", "EDSR-light+SPN", "x4", "Set14", "PSNR", 28.61, baseline="EDSR-light",
         gain=0.11, gain_ci_low=0.03, gain_ci_high=0.19),
    _row("spn", "Table 1", "EDSR-light+SPN", "x4", "Urban100", "PSNR", None, notes=SKIP_REASON),
    _row("spn", "Table 1", "EDSR-light+SPN (release schedule)", "x4", "Set14", "PSNR", 28.404),
    _row("textpromptir", "Table 1", "TextPromptIR", "all-in-one; sigma=25", "CBSD68", "PSNR", 31.40),
    _row("textpromptir", "Table 1", "TextPromptIR", "all-in-one", "Rain100L", "PSNR", 38.00, notes=NOTE),
]


def _paper(paper, table, method, setting, dataset, metric) -> str:
    ref = reference(paper)
    hit = ref[(ref.table == table) & (ref.method == method) & (ref.setting == setting) & (ref.dataset == dataset)
              & (ref.metric == metric)]
    assert len(hit) == 1
    return hit.value.iloc[0]


def _expected_cell(value: float, paper: str) -> str:
    """``reproduced / paper (Δ)`` computed with decimal arithmetic at the paper's printed precision."""
    q = Decimal(paper)
    mine = Decimal(repr(value)).quantize(q)
    return f"{mine} / {paper} ({'+' if mine - q >= 0 else '-'}{abs(mine - q)})"


def _md_tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every pipe table of a markdown text as (header, rows) with the cells unescaped."""
    tables, lines = [], md.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|:"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip().replace("\\_", "_").replace("\\|", "|")
                              for c in lines[i].strip().strip("|").split(" | ")])
                i += 1
            tables.append((block[0], block[2:]))
        i += 1
    return tables


def _cell(tables, method: str, setting: str, column: str) -> str:
    for header, rows in tables:
        if column in header and "Method" in header:
            for r in rows:
                if r[0] == method and (("Setting" not in header) or r[header.index("Setting")] == setting):
                    return r[header.index(column)]
    raise KeyError((method, setting, column))


@pytest.fixture(scope="module")
def out_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    pd.DataFrame(ROWS).to_csv(root / "results.csv", index=False)
    for paper, fig_label, nb in (("spn", "Fig. 4", "spn"), ("textpromptir", "Fig. 10", "textpromptir")):
        fig = Figure(figsize=(3, 2))  # no pyplot: the test leaves the session's backend alone
        ax = fig.subplots()
        ax.plot(np.arange(5), np.arange(5) ** 2, label="PSNR")
        ax.set(xlabel="step", ylabel="PSNR (dB)")
        ax.legend()
        save_figure(fig, root / nb, figure=fig_label, paper=paper, title=f"{paper} test figure",
                    caption=f"Caption of {paper} {fig_label}.", smoke=True)
    (root / "spn" / "spn.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                        "nbformat_minor": 5}))
    status = pd.DataFrame({"notebook": ["spn", "textpromptir"], "status": ["ok", "failed"],
                           "seconds": [12.5, 3.0], "error": ["", ERROR]})
    write_report(root, status, "rehearse")
    return root


@pytest.fixture(scope="module")
def md(out_root) -> str:
    return (out_root / "report.md").read_text()


def test_pivot_cells_are_reproduced_paper_delta(md) -> None:
    tables = _md_tables(md)
    paper = _paper("spn", "Table 1", "EDSR-light", "x4", "Set14", "PSNR")
    assert _cell(tables, "EDSR-light", "x4", "Set14 · PSNR") == _expected_cell(28.50, paper) == "28.50 / 28.58 (-0.08)"
    paper = _paper("spn", "Table 1", "EDSR-light", "x4", "Set14", "SSIM")
    assert _cell(tables, "EDSR-light", "x4", "Set14 · SSIM") == _expected_cell(0.7790, paper)
    paper = _paper("spn", "Table 1", "EDSR-light+SPN", "x4", "Set14", "PSNR")
    assert _cell(tables, "EDSR-light+SPN", "x4", "Set14 · PSNR") == _expected_cell(28.61, paper)
    # a cited row irlib did not run shows only the paper's number
    paper = _paper("spn", "Table 1", "SwinIR", "x4", "Set14", "PSNR")
    assert _cell(tables, "SwinIR", "x4", "Set14 · PSNR") == f"— / {paper}"
    # a reproduced row the paper does not print: the bare value, rounded like the paper's PSNRs
    assert _cell(tables, "EDSR-light+SPN (release schedule)", "x4", "Set14 · PSNR") == "28.40"
    # the common 'all-in-one' condition is stated once; sigma qualifies CBSD68 in the header
    assert "Setting of every row: all-in-one" in md
    paper = _paper("textpromptir", "Table 1", "TextPromptIR", "all-in-one; sigma=25", "CBSD68", "PSNR")
    assert _cell(tables, "TextPromptIR", "", "sigma=25 · CBSD68 · PSNR") == _expected_cell(31.40, paper)


def test_rows_follow_the_papers_order(md) -> None:
    header, rows = next(t for t in _md_tables(md) if "Set14 · PSNR" in t[0])
    methods = [(r[0], r[1]) for r in rows]
    ref = reference("spn")
    ref = ref[ref.table == "Table 1"]
    order = list(dict.fromkeys(zip(ref.method, ref.setting, strict=True)))
    assert methods == order + [("EDSR-light+SPN (release schedule)", "x4")]


def test_gains_are_a_separate_labelled_table(md) -> None:
    assert f"**Table 1: {GAIN_TITLE}**" in md
    header, rows = next(t for t in _md_tables(md) if "gain [95% CI]" in t[0])
    assert header[:2] == ["variant", "baseline"] and "Method" not in header
    (row,) = rows
    paper_gain = Decimal(_paper("spn", "Table 1", "EDSR-light+SPN", "x4", "Set14", "PSNR")) \
        - Decimal(_paper("spn", "Table 1", "EDSR-light", "x4", "Set14", "PSNR"))
    assert row[:4] == ["EDSR-light+SPN", "EDSR-light", "x4 · Set14", "PSNR"]
    assert row[header.index("gain [95% CI]")] == "+0.11 [+0.03, +0.19]"
    assert row[header.index("paper gain")] == f"+{paper_gain}"
    # the interval never appears inside the pivot of absolute values
    assert all("[+0.03" not in c for t in _md_tables(md) if "Method" in t[0] for r in t[1] for c in r)


def test_skips_and_notes_are_shown(md) -> None:
    tables = _md_tables(md)
    urban = _paper("spn", "Table 1", "EDSR-light+SPN", "x4", "Urban100", "PSNR")
    assert _cell(tables, "EDSR-light+SPN", "x4", "Urban100 · PSNR") == f"skipped / {urban}"
    skipped = md.split("**Skipped in Table 1:**", 1)[1].split("\n\n")[1]  # the list under the heading
    assert skipped == f"- {SKIP_REASON.replace('_', chr(92) + '_')} — EDSR-light+SPN (x4) · Urban100"
    # an ordinary note becomes a numbered footnote referenced from its cell
    cell = _cell(tables, "TextPromptIR", "", "Rain100L · PSNR")
    marker = cell.rsplit(" ", 1)[1]
    assert marker.startswith("[") and cell.startswith("38.00 / 38.41 (-0.41)")
    assert f"{marker[1:-1]}. {NOTE}" in md
    # the paper's own flags reach the reader too (SPN Table 1 x2 Avg: text contradicts table)
    cell = _cell(tables, "EDSR-light", "x2", "Avg · PSNR")
    marker = cell.rsplit(" ", 1)[1]
    assert cell == f"— / 32.06 {marker}"
    assert any(line.startswith(f"{marker[1:-1]}. paper: TEXT CONTRADICTS TABLE") for line in md.splitlines())
    assert "Reproduced cells: measured on synthetic; weights random; seeds 1; images per test set 2." in md


def test_banner_links_figures_and_status(md, out_root) -> None:
    assert md.splitlines()[2] == f"> **{REHEARSE_BANNER}**"
    assert "[spn](spn/spn.ipynb)" in md and "textpromptir (no executed notebook)" in md
    assert "\\<script\\>" in md and "\\| bad" in md  # escaped, so the status table keeps its columns
    for paper, label, stem in (("spn", "Fig. 4", "fig4"), ("textpromptir", "Fig. 10", "fig10")):
        path = f"{paper}/figures/{paper}_{stem}.png"
        assert (out_root / path).is_file() and f"]({path})" in md
        assert f"Caption of {paper} {label}." in md
    assert md.index("## SPN") < md.index("spn/figures/spn_fig4.png") < md.index("## TextPromptIR")
    assert "![Reproduced vs paper PSNR](report_psnr.png)" in md and (out_root / "report_psnr.png").is_file()
    assert "Paper tables with no rows in this run: Table 2, Table 3" in md
    lines = md.splitlines()
    headings = [i for i, line in enumerate(lines) if line.startswith("### Table")]
    assert headings and all(lines[i + 2].startswith("*rehearse profile, random weights") for i in headings)


def test_banner_choice(tmp_path) -> None:
    rows = pd.DataFrame([_row("spn", "Table 4", "NAFNet", "", "GoPro", "PSNR", 32.0, weights="pretrained")])
    write_report(tmp_path, pd.DataFrame(), "full", rows=rows)
    text = (tmp_path / "report.md").read_text()
    assert SMOKE_BANNER not in text and REHEARSE_BANNER not in text and RANDOM_WEIGHTS_BANNER not in text
    assert "pipeline check" not in text  # no per-table mark either
    write_report(tmp_path, pd.DataFrame(), "full", rows=rows.assign(weights="random"))
    assert RANDOM_WEIGHTS_BANNER in (tmp_path / "report.md").read_text()
    write_report(tmp_path, pd.DataFrame(), "smoke", rows=rows)
    assert f"> **{SMOKE_BANNER}**" in (tmp_path / "report.md").read_text()


def test_layout_rules_on_the_reference_tables() -> None:
    ref = reference()
    empty = load_rows(".", pd.DataFrame(columns=["paper"]))

    def view(paper, table):
        return build_table(paper, table, ref[(ref.paper == paper) & (ref.table == table)], empty)

    # TextPromptIR Table 3: training mixes are rows, sigma qualifies CBSD68 in the columns
    v = view("textpromptir", "Table 3")
    labels = [g[0] for b in v.blocks for g in b.groups]
    assert labels == ["sigma=15 · CBSD68", "sigma=25 · CBSD68", "sigma=50 · CBSD68", "Rain100L", "SOTS"]
    assert [r[1] for r in v.blocks[0].rows][:3] == ["trained on Noise", "trained on Rain", "trained on Haze"]
    # DiffLoss Table 1: three task blocks that share no row become three tables, as the paper prints them
    v = view("diffloss", "Table 1")
    assert [[g[0] for g in b.groups] for b in v.blocks] == [
        ["task=dehazing · Dense-Haze"], ["task=deraining · Rain100H"], ["task=low-light enhancement · LOL"]]
    assert sum(len(b.rows) for b in v.blocks) == 21
    # DINO-IR Table 1: 'multi-task' is the table's condition, 16 value columns split into two blocks of 8
    v = view("dinoir", "Table 1")
    assert v.condition == "multi-task" and [sum(len(g[1]) for g in b.groups) for b in v.blocks] == [8, 8]
    # DiffLoss Table 4: a ';' inside parentheses is not a separator
    assert split_setting("ablation c: final setting (ours; constraint on predicted noise)") == [
        "ablation c: final setting (ours; constraint on predicted noise)"]
    # a cell the paper prints as '-' (collapse) reads 'collapsed', not a number
    v = view("spn", "Table 8")
    texts = {r: c[0].text for b in v.blocks for r, c in zip(b.rows, b.cells, strict=True)}
    assert texts[("EDSR-light+SPN", "lambda=1e-2")].startswith("collapsed")


def test_old_schema_rows_are_mapped() -> None:
    old = pd.DataFrame([{"paper": "spn", "table": "Table 4", "method": "NAFNet", "setting": "", "dataset": "photos",
                         "paper_dataset": "GoPro", "metric": "PSNR", "value": "30.1", "weights": "random"}])
    rows = load_rows(".", old)
    assert rows.loc[0, "dataset"] == "GoPro" and rows.loc[0, "measured_on"] == "photos"
    assert rows.loc[0, "value"] == pytest.approx(30.1) and rows.loc[0, "baseline"] == ""


# ---------------------------------------------------------------------------------------------- browser

def _browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip install playwright) not installed")
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        pytest.skip("Debian chromium not installed (apt-get install -y chromium)")
    return sync_api


def test_html_renders_every_table_image_and_the_banner(out_root, md) -> None:
    sync_api = _browser()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out_root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    failed: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
            page.goto(f"http://127.0.0.1:{server.server_port}/report.html", wait_until="load")

            assert page.locator(".banner").is_visible()
            assert page.locator(".banner").inner_text() == REHEARSE_BANNER

            tables = page.locator("table")
            assert tables.count() == len(_md_tables(md)) >= 5
            for i in range(tables.count()):
                t = tables.nth(i)
                t.scroll_into_view_if_needed()
                box = t.bounding_box()
                assert t.is_visible() and box and box["width"] > 0 and box["height"] > 0
                assert t.locator("tbody tr").count() >= 1

            images = page.locator("img")
            assert images.count() == 3  # two notebook figures and the scatter
            for i in range(images.count()):
                img = images.nth(i)
                img.scroll_into_view_if_needed()
                assert img.is_visible()
                assert img.evaluate("e => e.complete && e.naturalWidth > 0 && e.naturalHeight > 0")
            captions = page.locator("figcaption").all_inner_texts()
            assert any("Caption of spn Fig. 4." in c for c in captions)
            assert any("Caption of textpromptir Fig. 10." in c for c in captions)

            pivot = page.locator("table.pivot", has_text="EDSR-light+SPN (release schedule)")
            assert "28.50 / 28.58 (-0.08)" in pivot.inner_text()
            gains = page.locator("table.gains")
            assert gains.count() == 1 and "+0.11 [+0.03, +0.19]" in gains.inner_text()
            assert GAIN_TITLE in gains.locator("caption").inner_text()
            status = page.locator("table.status")
            assert ERROR in status.inner_text()  # shown as text, not executed
            assert page.evaluate("() => window.pwned") is None
            assert status.locator("a").get_attribute("href") == "spn/spn.ipynb"
            assert page.request.get(f"http://127.0.0.1:{server.server_port}/spn/spn.ipynb").ok
            browser.close()
    finally:
        server.shutdown()
    assert not failed, f"requests failed: {failed}"
