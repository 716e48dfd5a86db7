"""Snakemake hygiene: `snakemake --lint` and `snakefmt --check` are clean; every rule has a log."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_snakemake_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in output, output[-3000:]


def test_snakefmt_check_is_clean():
    snakefmt = REPO / ".venv" / "bin" / "snakefmt"
    command = [str(snakefmt)] if snakefmt.exists() else [sys.executable, "-m", "snakefmt"]
    result = subprocess.run(command + ["--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_with_a_script_has_a_log_and_heavy_rules_a_benchmark():
    heavy = {"pretrain", "extract_voc07_features", "extract_places205_features", "svm_full", "svm_lowshot", "linear_probe", "prepare_data"}
    for path in (REPO / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n((?:    .*\n|\n)+)", path.read_text(), flags=re.MULTILINE):
            if "script:" in body:
                assert "    log:" in body, f"rule {name} in {path.name} has no log"
                assert "    conda:" in body, f"rule {name} in {path.name} has no conda env"
            if name in heavy:
                assert "    benchmark:" in body, f"rule {name} has no benchmark file"
