"""The tables of the report as HTML pages: a table (CSV written by the tables stage) and, when it has one, its
per-cell provenance sidecar (``tables_provenance``). Snakemake's report embeds each page (an output marked
``report()`` in rules/report.smk); the report itself is Snakemake's."""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from ..core.io import write_text_atomic

STYLE = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse;margin-bottom:1.5em} "
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} th{background:#eee}")


def table_page(title: str, table_csv: str | Path, provenance_json: str | Path | None = None) -> str:
    """The HTML of one page: the table by section (measured, published), then the provenance of each figure."""
    frame = pd.read_csv(table_csv)
    parts = [f"<h2>{html.escape(title)}</h2>"]
    sections = frame.groupby("section", sort=False) if "section" in frame else [("", frame)]
    for section, rows in sections:
        if section:
            parts.append(f"<h3>{html.escape(str(section))}</h3>")
        rows = rows.drop(columns=["section"], errors="ignore").dropna(axis=1, how="all")
        parts.append(rows.to_html(index=False, na_rep="", float_format=lambda value: f"{value:.2f}"))
    if provenance_json is not None:
        from .cell_provenance import provenance_frame

        cells = json.loads(Path(provenance_json).read_text())["cells"]
        parts.append("<h3>Provenance of each measured figure</h3><p>The result file it was read from (and the "
                     "SHA-256 of its bytes); the digests of the evaluation's config and code; for each trained "
                     "model behind it (the members of a concatenation), the training run folder and the digests "
                     "of its config, code and data.</p>")
        parts.append(provenance_frame(cells).to_html(index=False, na_rep=""))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def write_table_page(title: str, table_csv: str | Path, output_html: str | Path,
                     provenance_json: str | Path | None = None) -> None:
    write_text_atomic(output_html, table_page(title, table_csv, provenance_json))
