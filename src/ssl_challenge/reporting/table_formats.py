"""What every table shares: reading result files, the best layer, and Markdown / LaTeX rendering."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def best_layer(results: Sequence[dict], score_key: str) -> tuple[float, str]:
    """The best layer's score among per-layer result dicts (each with 'layer')."""
    best = max(results, key=lambda result: result[score_key])
    return float(best[score_key]), best["layer"]


def format_number(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.2f}"


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for _, row in frame.iterrows():
        cells = [format_number(value) if isinstance(value, float) or value is None else str(value) for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    return str(text).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def latex_table(frame: pd.DataFrame, caption: str) -> str:
    columns = " & ".join(latex_escape(column) for column in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = [format_number(v) if isinstance(v, float) or v is None else latex_escape(v) for v in row]
        body.append(" & ".join(cells) + r" \\")
    return "\n".join([
        r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
        r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule", columns + r" \\", r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])


def paths_by_suffix(outputs: Sequence[str], suffixes: Sequence[str]) -> list[str]:
    """The one path of ``outputs`` ending in each of ``suffixes``, in that order (a rule lists a table's files)."""
    paths = []
    for suffix in suffixes:
        matching = [str(path) for path in outputs if str(path).endswith(suffix)]
        if len(matching) != 1:
            raise ValueError(f"outputs {list(outputs)}: expected exactly one {suffix} file")
        paths.append(matching[0])
    return paths

