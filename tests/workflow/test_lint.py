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


# Rules whose jobs take real time: each writes a benchmark file (stage times, the DC vs ODC wall times).
HEAVY_RULES = {"prepare_data", "pretrain", "pseudo_labels", "codc_labels", "codc_round", "extract_voc07_features",
               "extract_places205_features", "concat_voc07_features", "concat_places205_features", "svm_full",
               "svm_lowshot", "linear_probe", "imagenet_linear", "voc07_detection"}
RULE_HEADER = re.compile(r"^(?:rule (?P<name>\w+)|use rule (?P<parent>\w+) as (?P<derived>\w+) with):\n"
                         r"(?P<body>(?:    .*\n|\n)*)", flags=re.MULTILINE)


def directives(body: str) -> set[str]:
    """The directives a rule's body gives (``log``, ``benchmark``, ``script``, ...): its 4-space-indented keys."""
    return set(re.findall(r"^    (\w+):", body, flags=re.MULTILINE))


def workflow_rules() -> dict[str, tuple[set[str], set[str], str]]:
    """Every rule of rules/*.smk: name -> (its effective directives, those its own body gives, file name). A rule
    written as `use rule parent as name with:` inherits the parent's directives and overrides those it gives."""
    found, derived = {}, []
    for path in sorted((REPO / "rules").glob("*.smk")):
        for match in RULE_HEADER.finditer(path.read_text()):
            own = directives(match["body"])
            if match["name"]:
                found[match["name"]] = (own, own, path.name)
            else:
                derived.append((match["derived"], match["parent"], own, path.name))
    for name, parent, own, file_name in derived:
        assert parent in found, f"use rule {parent} as {name} ({file_name}): no rule {parent}"
        found[name] = (found[parent][0] | own, own, file_name)
    return found


def test_every_rule_with_a_script_has_a_log_and_heavy_rules_a_benchmark():
    rules = workflow_rules()
    assert "extract_places205_features" in rules and "concat_places205_features" in rules  # `use rule` ones
    missing = HEAVY_RULES - set(rules)
    assert not missing, f"heavy rules not found in rules/*.smk (renamed?): {sorted(missing)}"
    for name, (effective, own, file_name) in rules.items():
        if "script" in effective:
            assert "log" in effective, f"rule {name} in {file_name} has no log"
            assert "conda" in effective, f"rule {name} in {file_name} has no conda env"
        if name in HEAVY_RULES:
            assert "benchmark" in effective, f"rule {name} in {file_name} has no benchmark file"
        if own is not effective:  # a derived rule: an inherited log or benchmark path would be shared by two rules
            for directive in {"log", "benchmark"} & effective:
                assert directive in own, f"rule {name} in {file_name} inherits its parent's {directive} path"


def test_the_rule_reader_sees_derived_rules_and_their_overrides():
    rules = workflow_rules()
    effective, own, file_name = rules["extract_places205_features"]
    assert file_name == "features.smk"
    assert {"log", "benchmark", "params", "output"} <= own and "script" not in own
    assert {"script", "conda", "input"} <= effective - own  # inherited from extract_voc07_features
