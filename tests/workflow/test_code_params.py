"""Every rule that runs a script passes the digest of THAT script's code as its `code` param (rules/*.smk)."""
from __future__ import annotations

import re

from conftest import REPO

TRAINING_CODE = ("pretrain_code", "codc_round_code")  # functions of the wildcards: the model's method modules


def rule_blocks() -> dict[str, str]:
    """Each rule's text; a rule made by `use rule A as B with:` gets A's text followed by its own."""
    blocks = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=(?:use )?rule \w+)", path.read_text()):
            name = re.match(r"rule (\w+):", block)
            derived = re.match(r"use rule (\w+) as (\w+) with:", block)
            if name:
                blocks[name.group(1)] = block
            elif derived:
                blocks[derived.group(2)] = blocks[derived.group(1)] + block
    return blocks


def test_each_script_rule_digests_its_own_script():
    checked = 0
    for rule, block in rule_blocks().items():
        script = re.search(r'script:\s*"\.\./workflow/scripts/(\w+\.py)"', block)
        if not script:
            continue
        code = re.search(r"^\s*code=(.*),$", block, flags=re.MULTILINE)
        assert code, f"rule {rule} runs {script.group(1)} but has no code param"
        if code.group(1) in TRAINING_CODE:
            assert script.group(1) == "pretrain.py", rule
        else:
            assert code.group(1) == f'code_digest("{script.group(1)}")', rule
        checked += 1
    assert checked >= 13


def test_every_rule_that_computes_with_torch_or_blas_follows_the_numerics_mode():
    """resources.deterministic changes results: the jobs that compute must be stale when it changes."""
    computing = {"pretrain", "pseudo_labels", "codc_labels", "codc_round", "extract_voc07_features",
                 "extract_places205_features", "svm_full", "svm_lowshot", "linear_probe", "imagenet_linear"}
    blocks = rule_blocks()
    assert computing <= set(blocks)
    for rule in computing:
        assert re.search(r"^\s*numerics=numerics_mode\(\),$", blocks[rule], flags=re.MULTILINE), rule
