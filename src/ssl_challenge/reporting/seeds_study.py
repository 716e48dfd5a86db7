"""The seeds study: the default experiment rerun with several training seeds, its tables as mean +- standard
deviation over the seeds, and the seed's claims judged against that run-to-run noise (``results/tables/claims.md``).

Pure functions on the tables each run writes (``leaderboard.csv``, ``codc_ablation.csv``, ``dc_vs_odc.csv``),
tested on hand-made tables; torch-free.

Verdict of a claim "A > B" measured as per-seed differences d_1..d_n (A - B, in mAP points or seconds): mean m,
sample standard deviation s, and the 95 % Student-t interval m +- t(0.975, n-1) s / sqrt(n). **holds** when the
interval lies above 0, **fails** when it lies below 0, **within noise** when it contains 0 (and always with a
single seed: no spread, no verdict).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

HOLDS, WITHIN_NOISE, FAILS = "holds", "within noise", "fails"
AFTER, BEFORE, CONCATENATE = "after CODC", "before CODC", "concatenate"
CONTROL_AFTER = "control (label_source: self): after CODC"


# ------------------------------------------------------------------------------------------- statistics
def t_quantile(degrees: int) -> float:
    """The 0.975 quantile of Student's t with ``degrees`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, degrees))


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float | None  # sample standard deviation (None with one value)
    n: int

    @property
    def half_width(self) -> float | None:
        """Half the 95 % Student-t interval of the mean (None with one value)."""
        if self.n < 2 or self.std is None:
            return None
        return t_quantile(self.n - 1) * self.std / math.sqrt(self.n)

    def text(self, digits: int = 2) -> str:
        spread = "" if self.std is None else f" +- {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}{spread} (n={self.n})"


def spread(values: Sequence[float]) -> Spread | None:
    """Mean, sample standard deviation and count of the finite ``values`` (None when there are none)."""
    finite = [float(value) for value in values if value is not None and math.isfinite(float(value))]
    if not finite:
        return None
    mean = sum(finite) / len(finite)
    std = (math.sqrt(sum((value - mean) ** 2 for value in finite) / (len(finite) - 1))
           if len(finite) > 1 else None)
    return Spread(mean, std, len(finite))


def verdict(differences: Sequence[float]) -> str:
    """holds / within noise / fails for per-seed differences "claimed larger minus claimed smaller"."""
    summary = spread(differences)
    if summary is None or summary.half_width is None:
        return WITHIN_NOISE
    if summary.mean - summary.half_width > 0:
        return HOLDS
    if summary.mean + summary.half_width < 0:
        return FAILS
    return WITHIN_NOISE


# ------------------------------------------------------------------------------------------- tables
def aggregate(frames: Sequence[pd.DataFrame], keys: Sequence[str]) -> pd.DataFrame:
    """Per-seed tables with the same ``keys`` columns -> one table: per key row, each numeric column as
    "mean +- std (n=...)" over the seeds that have it (n counts them). Row order: the first table's."""
    if not frames:
        raise ValueError("aggregate: no tables (no seed finished)")
    stacked = pd.concat([frame.assign(_seed=index) for index, frame in enumerate(frames)], ignore_index=True)
    numeric = [column for column in frames[0].columns
               if column not in keys and pd.api.types.is_numeric_dtype(frames[0][column])]
    rows = []
    for key_values, group in stacked.groupby(list(keys), sort=False, dropna=False):
        key_values = key_values if isinstance(key_values, tuple) else (key_values,)
        row = dict(zip(keys, key_values))
        for column in numeric:
            summary = spread(group[column].tolist())
            row[column] = "" if summary is None else summary.text()
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *numeric])


def measured(frame: pd.DataFrame) -> pd.DataFrame:
    """The measured section of a table that has a ``section`` column, without the columns that only the published
    section fills (the ablation's published figures have columns of their own)."""
    if "section" not in frame:
        return frame
    rows = frame[frame["section"] == "measured"].drop(columns="section")
    return rows.dropna(axis="columns", how="all")


# ------------------------------------------------------------------------------------------- claims
@dataclass
class Claim:
    claim: str
    comparison: str
    differences: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.differences)


def ablation_cell(frame: pd.DataFrame, stage: str, column: str) -> float | None:
    rows = frame[frame["stage"] == stage]
    if rows.empty or column not in frame or pd.isna(rows[column].iloc[0]):
        return None
    return float(rows[column].iloc[0])


def experiment_columns(frame: pd.DataFrame) -> dict[str, list[str]]:
    """``{experiment: [its member columns]}`` of an ablation table (columns ``experiment: member``)."""
    columns: dict[str, list[str]] = {}
    for column in frame.columns:
        if ": " in column:
            columns.setdefault(column.split(": ", 1)[0], []).append(column)
    return columns


def paired(ablations: Sequence[pd.DataFrame], first, second) -> list[float]:
    """Per seed, ``first(table) - second(table)`` where both exist."""
    differences = []
    for table in ablations:
        a, b = first(table), second(table)
        if a is not None and b is not None:
            differences.append(a - b)
    return differences


def ablation_claims(ablations: Sequence[pd.DataFrame]) -> list[Claim]:
    """The seed's claims on the CODC ablation (each table: measured rows of one seed's ``codc_ablation.csv``)."""
    claims = []
    for experiment, columns in experiment_columns(ablations[0]).items():
        for column in columns:
            member = column.split(": ", 1)[1]
            differences = paired(ablations, lambda t, c=column: ablation_cell(t, AFTER, c),
                                 lambda t, c=column: ablation_cell(t, BEFORE, c))
            if differences:
                claims.append(Claim("CODC improves every member", f"{experiment}: {member} after - before CODC",
                                    differences))

        def best_member(table, columns=columns):
            values = [ablation_cell(table, AFTER, column) for column in columns]
            values = [value for value in values if value is not None]
            return max(values) if values else None

        def concatenation(table, columns=columns):
            values = [ablation_cell(table, CONCATENATE, column) for column in columns]
            return next((value for value in values if value is not None), None)

        differences = paired(ablations, concatenation, best_member)
        if differences:
            claims.append(Claim("the concatenation beats its best member",
                                f"{experiment}: concatenation - best member after CODC", differences))
        for column in columns:
            differences = paired(ablations, lambda t, c=column: ablation_cell(t, AFTER, c),
                                 lambda t, c=column: ablation_cell(t, CONTROL_AFTER, c))
            if differences:
                claims.append(Claim("peers' labels beat self-labelling",
                                    f"{experiment}: {column.split(': ', 1)[1]} after CODC, peers' - own labels",
                                    differences))
    return claims


def speed_claim(dc_vs_odc: Sequence[pd.DataFrame]) -> Claim | None:
    """ODC reaches DC's final VOC07 SVM mAP in fewer training seconds than DC: per seed, DC's seconds to its
    final mAP minus the fastest ODC model's (``seconds_to_dc_final``; a seed where no ODC model reaches it counts
    against the claim and is noted)."""
    if not dc_vs_odc or "seconds_to_dc_final" not in dc_vs_odc[0]:
        return None
    differences, never = [], 0
    for table in dc_vs_odc:
        dc = table[table["method"] == "dc"]["seconds_to_dc_final"].dropna()
        odc = table[table["method"] == "odc"]["seconds_to_dc_final"].dropna()
        if dc.empty:
            continue
        if odc.empty:
            never += 1
            continue
        differences.append(float(dc.min()) - float(odc.min()))
    claim = Claim("ODC reaches DC's accuracy faster", "DC's seconds - ODC's seconds to DC's final VOC07 SVM mAP",
                  differences)
    if never:
        claim.note = f"ODC never reached DC's final mAP in {never} of {never + len(differences)} seeds"
        if never * 2 >= never + len(differences):
            claim.differences = []  # no verdict from the minority that reached it
            claim.note += "; judged: fails"
    return claim


def claim_verdict(claim: Claim) -> str:
    if claim.note.endswith("judged: fails"):
        return FAILS
    return claim.verdict


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    rows = []
    for claim in claims:
        summary = spread(claim.differences)
        rows.append({
            "claim": claim.claim, "comparison": claim.comparison,
            "difference": "" if summary is None else f"{summary.mean:+.2f}",
            "spread (std)": "" if summary is None or summary.std is None else f"{summary.std:.2f}",
            "95% interval": "" if summary is None or summary.half_width is None else
            f"[{summary.mean - summary.half_width:+.2f}, {summary.mean + summary.half_width:+.2f}]",
            "n": 0 if summary is None else summary.n,
            "verdict": claim_verdict(claim) + (f" ({claim.note})" if claim.note else ""),
        })
    return pd.DataFrame(rows, columns=["claim", "comparison", "difference", "spread (std)", "95% interval", "n",
                                       "verdict"])


def seeds_selection_note(tracks: Sequence[str]) -> str:
    """The selection line of a table over seeds: the tracks' choices on test data, made in each seed's run."""
    from .table_formats import selection_note

    note = selection_note(tracks)
    return note and note + " Each seed's run makes these choices on its own results."


def claims_markdown(table: pd.DataFrame, seeds: Sequence[int]) -> str:
    from .table_formats import markdown_table

    return "\n".join([
        "# The seed's claims against run-to-run noise", "",
        f"Seeds {list(seeds)}: each a full rerun of the experiment with every training seed set to it (data and "
        "evaluation draws fixed). Difference: mean over the seeds of the per-seed difference (VOC07 SVM mAP points, "
        "or seconds); spread: its standard deviation; verdict: *holds* when the 95 % Student-t interval of the mean "
        "is above 0, *fails* when below, *within noise* otherwise (always with one seed).", "",
        markdown_table(table) if len(table) else "No claim applies: the configuration has no CODC ablation and no DC "
        "and ODC models.", "",
        seeds_selection_note(["voc07_svm"]) + " The seconds to DC's final mAP are read from mAPs selected so too."
        if len(table) else "", ""])


# ------------------------------------------------------------------------------------------- the stage
def write_seeds_study(seeds: Sequence[int], leaderboards: Sequence[str], ablations: Sequence[str],
                      dc_vs_odcs: Sequence[str], outputs: dict, log) -> pd.DataFrame:
    """Aggregate the seeds' tables into ``outputs`` (keys leaderboard_csv, leaderboard_md, ablation_csv,
    ablation_md, claims_csv, claims_md; the ablation ones say so when the config has no ablation) atomically;
    returns the claims."""
    from ..core.io import atomic_path, write_text_atomic
    from .table_formats import SELECTION, markdown_table

    def write(frame: pd.DataFrame, csv_key: str, md_key: str, title: str, note: str) -> None:
        with atomic_path(outputs[csv_key]) as temporary:
            frame.to_csv(temporary, index=False)
        write_text_atomic(outputs[md_key], "\n".join([
            f"# {title}", "", f"Measured by this pipeline with seeds {list(seeds)}: mean +- sample standard "
            "deviation over the seeds (n = the seeds with the figure).", "", markdown_table(frame), "", note, ""]))

    leaderboard = aggregate([measured(pd.read_csv(path)) for path in leaderboards], ["model"])
    write(leaderboard, "leaderboard_csv", "leaderboard_md", "Leaderboard over seeds",
          seeds_selection_note([track for track in SELECTION if track in leaderboard.columns]))
    ablation_tables = [measured(pd.read_csv(path)) for path in ablations]
    claims = ablation_claims(ablation_tables) if ablation_tables else []
    write(aggregate(ablation_tables, ["stage"]) if ablation_tables else pd.DataFrame(columns=["stage"]),
          "ablation_csv", "ablation_md", "CODC ablation over seeds" + ("" if ablation_tables else
                                                                       " (none: the config has no ablation)"),
          seeds_selection_note(["voc07_svm"]))
    speed = speed_claim([pd.read_csv(path) for path in dc_vs_odcs])
    if speed is not None:
        claims.append(speed)
    table = claims_table(claims)
    with atomic_path(outputs["claims_csv"]) as temporary:
        table.to_csv(temporary, index=False)
    write_text_atomic(outputs["claims_md"], claims_markdown(table, seeds))
    log.info("claims over seeds %s:\n%s", list(seeds), table.to_string(index=False))
    return table
