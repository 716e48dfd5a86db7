"""Parse what `snakemake -n` says it would run, and why."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedJob:
    rule: str
    wildcards: tuple[tuple[str, str], ...]
    reason: str

    @property
    def model(self) -> str | None:
        return dict(self.wildcards).get("model")


def planned_jobs(dry_run_output: str) -> list[PlannedJob]:
    """Jobs of a dry run: each block starts with `rule NAME:` (or `localrule NAME:`)."""
    jobs = []
    for block in re.split(r"^(?=(?:local)?rule \w+:)", dry_run_output, flags=re.MULTILINE):
        header = re.match(r"(?:local)?rule (\w+):", block)
        if not header:
            continue
        wildcards = re.search(r"^\s*wildcards: (.*)$", block, flags=re.MULTILINE)
        reason = re.search(r"^\s*reason: (.*)$", block, flags=re.MULTILINE)
        pairs = []
        if wildcards:
            pairs = [tuple(item.split("=", 1)) for item in wildcards.group(1).split(", ")]
        jobs.append(PlannedJob(header.group(1), tuple(pairs), reason.group(1) if reason else ""))
    return jobs
