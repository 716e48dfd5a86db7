"""Every script in benchmarks/ runs in its tiny mode, as a person runs it (a fresh process from the repository
root), and prints its table: the rows it names, numbers that parse. The figures themselves mean nothing at these
sizes; what fails here is a change that breaks a benchmark (as a change of ``train_step`` once broke the GPU
check unnoticed). The real sizes stay manual (benchmarks/README.md).

The GPU check is also run as on a bare GPU node: faiss, snakemake, PyYAML, jsonschema, pandas and matplotlib made
unimportable, the package found by the script itself; there it must say which part it skips and still print its
table, and never even try to import snakemake. Its time budget is checked in this process on its own functions."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
TIMEOUT = 900  # seconds per script: each takes seconds to a minute on 2 idle cores, far more on a loaded machine
NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"
BARE_NODE_MISSING = ("faiss", "snakemake", "yaml", "jsonschema", "pandas", "matplotlib")


def run_script(script: str | Path, *arguments: str, env: dict | None = None, python_flags: tuple[str, ...] = (),
               cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> <arguments>`` (this venv's python, the library on PYTHONPATH unless ``env``
    says otherwise) from ``cwd``; fails the test with the output's end when it fails."""
    environment = dict(os.environ, PYTHONPATH=str(REPO / "src"), SLURM_CONF="/dev/null", PYTHONUNBUFFERED="1")
    environment.update(env or {})
    result = subprocess.run([sys.executable, *python_flags, str(BENCHMARKS / script), *arguments], cwd=cwd,
                            env=environment, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (f"{script} {' '.join(arguments)} failed ({result.returncode}):\n"
                                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def number(text: str) -> float:
    """The first number in ``text`` ("1,234.5 inputs/s" -> 1234.5)."""
    found = re.search(NUMBER, text)
    assert found, f"no number in {text!r}"
    return float(found.group().replace(",", ""))


def line_matching(output: str, pattern: str) -> re.Match:
    """The match of ``pattern`` on the one line of ``output`` it matches (searched line by line)."""
    matches = [m for m in (re.search(pattern, line) for line in output.splitlines()) if m]
    assert len(matches) == 1, f"{len(matches)} lines match {pattern!r} in:\n{output}"
    return matches[0]


def markdown_rows(output: str) -> dict[str, list[str]]:
    """The rows of a printed markdown table: first cell -> the other cells (header and rule lines left out)."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("| measurement "):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


# ------------------------------------------------------------------------------------------------ GPU check
def check_training_rows(rows: dict[str, list[str]]) -> None:
    for name, inputs in (("ROT", 16), ("DC", 8), ("ODC", 8)):  # TINY's batches; ROT's network sees 4 rotations
        result, baseline, ratio = rows[f"{name} training step (bf16, {inputs} inputs)"]
        assert result.endswith("inputs/s") and number(result) > 0
        assert baseline.endswith("inputs/s (pure fwd/bwd)") and number(baseline) > 0
        assert ratio.endswith("(target >= 0.9)") and number(ratio) > 0


def test_gpu_check_cpu_dry_run_prints_its_table():
    output = run_script("gpu_check.py", "--cpu").stdout
    lines = output.splitlines()
    assert lines[:2] == ["| measurement | result | baseline | ratio |", "|---|---|---|---|"], output
    rows = markdown_rows(output)
    assert len(rows) == 7, output
    check_training_rows(rows)
    kmeans_result = rows["k-means 5,000 x 16 -> 20, 20 it. (CPU faiss)"][0]
    # measured, unless a very busy machine spent the clustering part's budget before (tested apart below)
    assert re.fullmatch(rf"{NUMBER} s \((measured|estimated from a 1-iteration run of {NUMBER} s \(budget\))\)",
                        kmeans_result), kmeans_result
    assert re.fullmatch(rf"{NUMBER} s \(measured\)", rows["PCA 64 -> 16 + whitening (cpu)"][0])
    assert re.fullmatch(rf"{NUMBER} min", rows["clustering per DC epoch"][0])
    result, baseline, ratio = rows["SVM protocol 200 x 64, 2 classes, 19 costs: newton on cpu"]
    assert re.fullmatch(rf"{NUMBER} s", result)
    assert re.fullmatch(rf"liblinear sequential on the CPU {NUMBER} s \(1 class\(es\) timed, x 2\)", baseline)
    # the exact solver picks the reference's cost on the timed class (synthetic features with a fixed seed)
    assert re.fullmatch(rf"{NUMBER}x \(target >= 300x\); same costs on the timed classes: True", ratio)
    assert re.fullmatch(rf"total {NUMBER} s \(budget 420 s\)", lines[-1]), lines[-1]


def copy_of_the_tree(target: Path, marker: Path) -> Path:
    """The GPU check and the package copied to ``target`` (as a tree unpacked on a node), the package's
    ``__init__`` writing its own path to ``marker`` when imported."""
    shutil.copytree(REPO / "src" / "ssl_challenge", target / "src" / "ssl_challenge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(target / "src" / "ssl_challenge" / "__init__.py", "a") as init:
        init.write(f"\nfrom pathlib import Path as _Path\n_Path({str(marker)!r}).write_text(__file__)\n")
    (target / "benchmarks").mkdir()
    for script in ("gpu_check.py", "svm_protocol.py"):
        shutil.copy2(BENCHMARKS / script, target / "benchmarks" / script)
    return target / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_on_a_bare_node_skipping_faiss_and_never_importing_snakemake(tmp_path):
    missing = tmp_path / "missing"
    missing.mkdir()
    for module in BARE_NODE_MISSING:
        (missing / f"{module}.py").write_text(f"raise ImportError('no module named {module} on this node')\n")
    marker = tmp_path / "package_used"
    script = copy_of_the_tree(tmp_path / "tree", marker)
    # Only the stand-ins on the path, run from elsewhere, with a budget already spent: every part is cut to its
    # minimum, and the table is still complete.
    result = run_script(script, "--cpu", "--budget-seconds", "0", env={"PYTHONPATH": str(missing)},
                        python_flags=("-X", "importtime"), cwd=tmp_path)
    # the script put its own tree's package first on the path (this venv's editable install points elsewhere)
    assert marker.read_text() == str(tmp_path / "tree" / "src" / "ssl_challenge" / "__init__.py")
    rows = markdown_rows(result.stdout)
    check_training_rows(rows)
    assert rows["k-means 5,000 x 16 -> 20, 20 it."][0] == (
        "skipped: faiss is not installed here (no module named faiss on this node); install faiss-gpu "
        "(requirements-gpu.txt) to time it")
    assert re.fullmatch(rf"skipped: no k-means \(PCA alone {NUMBER} min\)", rows["clustering per DC epoch"][0])
    assert re.fullmatch(rf"{NUMBER} s \(measured\)", rows["PCA 64 -> 16 + whitening (cpu)"][0])
    result_cell, baseline, ratio = rows["SVM protocol 200 x 64, 2 classes, 19 costs: newton on cpu"]
    assert number(result_cell) > 0
    assert re.fullmatch(rf"liblinear sequential on the CPU: stopped at the budget after {NUMBER} s on 1 class\(es\): "
                        rf"> {NUMBER} s", baseline), baseline
    assert re.fullmatch(rf">= {NUMBER}x \(target >= 300x\)", ratio)
    # -X importtime lists every import tried, also those that failed or were caught
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert {"ssl_challenge.engine.train", "torch", "faiss"} <= imported  # the listing is real
    assert not {name for name in imported if name.split(".")[0] == "snakemake"}


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCHMARKS))
    return gpu_check


def test_gpu_check_timings_stop_at_their_deadline(gpu_check):
    calls = []
    gpu_check.timed_steps(lambda: calls.append(1), torch.device("cpu"), warmup=2, steps=5, deadline=None)
    assert len(calls) == 2 + 5
    calls.clear()
    gpu_check.timed_steps(lambda: calls.append(1), torch.device("cpu"), warmup=2, steps=5,
                          deadline=time.monotonic() - 1)
    assert len(calls) == 2 + 1  # the warm-up, then at least one timed step


def test_gpu_check_budget_shares_and_kmeans_estimate(gpu_check, monkeypatch):
    budget = gpu_check.Budget(100.0, started=1000.0)
    assert [budget.deadline(part) for part in ("training", "clustering", "svm")] == [1035.0, 1060.0, 1100.0]
    runs = []

    def fake_kmeans(points, clusters, iterations, seed, use_gpu):
        runs.append(iterations)
        time.sleep(0.01 * iterations)

    monkeypatch.setattr(gpu_check, "kmeans", fake_kmeans)
    seconds, how = gpu_check.kmeans_seconds(torch.zeros(4, 2), 2, use_gpu=False, time_left=0.0)
    assert runs == [1] and how.startswith("estimated from a 1-iteration run")
    assert 10.5 * 0.01 <= seconds < 10.5 * 0.5  # 21 passes over the points / the 2 of a 1-iteration run
    runs.clear()
    seconds, how = gpu_check.kmeans_seconds(torch.zeros(4, 2), 2, use_gpu=False, time_left=600.0)
    assert runs == [1, 20] and how == "measured" and seconds >= 0.2


# ------------------------------------------------------------------------------------------------ the others
def test_odc_memory_tiny():
    output = run_script("odc_memory.py", "--quick", "--samples", "20000", "--clusters", "100").stdout
    embedded = line_matching(output, rf"^\[embedded\] N=20000 k=(\d+) batch=128 .*ratio ({NUMBER}) .*overhead "
                                     rf"ratio ({NUMBER})$")
    assert number(embedded.group(2)) > 0 and number(embedded.group(3)) >= 1
    line_matching(output, r"^\[large\] N=20000 dim=256 k=100 batch=512: bank 0\.02 GiB")  # 20000 x 256 x 4 bytes
    line_matching(output, rf"^\[large\] ours: bookkeeping {NUMBER} ms/iteration \(mean of 50;")
    check = line_matching(output, rf"^\[large\] brute-force check: sizes equal True, max centroid error ({NUMBER})$")
    assert number(check.group(1)) < 1e-5  # the incremental state equals a recomputation
    line_matching(output, rf"^\[large\] one small-cluster event \(1 cluster, 19 members moved, largest split\): "
                          rf"{NUMBER} ms$")
    line_matching(output, rf"^\[large\] reference-style: bookkeeping {NUMBER} ms/iteration \(mean of 20, including "
                          r"2 full centroid recomputations")
    line_matching(output, rf"^\[large\] ratio reference-style / ours: {NUMBER}x; ours {NUMBER} ms vs target <= 5 ms$")


def test_dc_vs_odc_scale_tiny():
    output = run_script("dc_vs_odc_scale.py", "--sizes", "1000", "2000", "4000", "--odc-iterations", "2",
                        "--threads", "1").stdout
    line_matching(output, rf"^small_resnet 32px, 1 threads: training step \(batch 128\) {NUMBER} ms")
    header = line_matching(output, r"^\s+N\s+k \| steps/epoch").string
    assert header.split() == ["N", "k", "|", "steps/epoch", "train", "s", "|", "DC", "feat", "s", "PCA", "s",
                              "kmeans", "s", "DC", "extra", "|", "ODC", "mem", "ms", "ODC", "extra", "|", "DC/ODC"]
    for size in (1000, 2000, 4000):
        cells = line_matching(output, rf"^\s+{size} ").string.replace("|", " ").split()
        assert len(cells) == 11
        values = [float(cell) for cell in cells]
        assert values[1] == values[2] == size // 128  # k = N / 128 clusters, N / 128 steps of batch 128
        assert all(value >= 0 for value in values) and values[-1] > 0
    line_matching(output, rf"^fits: PCA {NUMBER} us/point; k-means \(20 it\.\) {NUMBER} ns per N\*k")
    line_matching(output, r"^ImageNet scale \(N=1,281,167, k=10,000, 2502 steps of 0\.45 s\): "
                          r"training 18\.8 min/epoch")
    predictions = [line for line in output.splitlines() if line.strip().startswith("predicted DC/ODC epoch time")]
    assert len(predictions) == 4 and all(re.search(rf"= {NUMBER}x \(seed: 3\.7x", line) for line in predictions)


def test_input_pipeline_tiny():
    output = run_script("input_pipeline.py", "--images", "16", "--workers", "1", "--batch-size", "8",
                        "--rounds", "1").stdout
    line_matching(output, r"^16 JPEGs \(shorter side 256-400 px\), batch 8, 1 workers / threads, best of 1$")
    for name in ("decode+resize", "train (crop+flip)", "train (reference DC)", "old loader (crop+flip)",
                 "old loader (reference DC)"):
        rate = line_matching(output, rf"^  {re.escape(name)} +({NUMBER}) images/s$")
        assert number(rate.group(1)) > 0
    for kind in ("crop+flip", "reference DC"):
        line_matching(output, rf"^{re.escape(kind)}: training pipeline / decode\+resize = {NUMBER} "
                              rf"\(target >= 0\.85\); / old loader = {NUMBER}$")


def test_kmeans_scale_tiny():
    output = run_script("kmeans_scale.py", "--sizes", "2000", "4000", "--clusters", "50", "--dims", "16",
                        "--input-dims", "64").stdout
    line_matching(output, r"^k-means k=50, 16 dims; PCA 64->16; \d+ CPU threads$")
    for size in ("2,000", "4,000"):
        row = line_matching(output, rf"^  cpu  N=\s+{size}: one k-means iteration\s+({NUMBER}) s \(\s*{NUMBER} "
                                    rf"us/point\), PCA 64->16\s+({NUMBER}) s")
        assert number(row.group(1)) >= 0 and number(row.group(2)) >= 0
    line_matching(output, rf"^CPU: at N=1,281,167 \(fitted a \+ b\*N on N <= 4,000\): one k-means iteration\s+"
                          rf"{NUMBER} s, PCA\s+{NUMBER} s -> clustering per DC epoch\s+{NUMBER} min$")


def test_job_overhead_tiny():
    output = run_script("job_overhead.py", "--rounds", "1", "--jobs", "2", "--snakemake-rounds", "1").stdout
    line_matching(output, r"^one process, median of 1 \(s\):$")
    for name in ("import torch, normal exit", "import torch, end_process", "embedded network",
                 "embedded network + import torchvision", "embedded network + SGD"):
        seconds = line_matching(output, rf"^  {re.escape(name)} +({NUMBER})$")
        assert number(seconds.group(1)) > 0
    line_matching(output, rf"^  Python's teardown after torch: {NUMBER} s; importing torchvision: {NUMBER} s; "
                          rf"a first optimizer \(torch\._dynamo\): {NUMBER} s$")
    line_matching(output, rf"^Snakemake, 2 jobs on 2 cores, best of 1 \(s\): Python's teardown {NUMBER}, "
                          rf"end_process {NUMBER}: {NUMBER}x, {NUMBER} s of wall time per job$")


def test_numerics_cost_tiny():
    output = run_script("numerics_cost.py", "--rounds", "1", "--steps", "1", "--batch", "64").stdout
    line_matching(output, r"^backbone\s+threads\s+deterministic s/step\s+fast s/step\s+ratio")
    row = line_matching(output, rf"^small_resnet\s+1\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})x\s+"
                                r"(\d+)%, (\d+)%, (\d+)% / (\d+)%, (\d+)%, (\d+)%$")
    deterministic, fast, ratio = (float(row.group(index)) for index in (1, 2, 3))
    assert deterministic > 0 and fast > 0 and ratio == pytest.approx(deterministic / fast, rel=0.05)
    assert all(0 <= int(row.group(index)) <= 100 for index in range(4, 10))


def test_svm_protocol_tiny(tmp_path):
    figures_path = tmp_path / "figures.json"
    output = run_script("svm_protocol.py", "--train", "200", "--test", "150", "--dims", "64", "--classes", "3",
                        "--threads", "1", "--json", str(figures_path)).stdout
    line_matching(output, r"^trainval \(200, 64\), test \(150, 64\), 3 classes, 19 costs$")
    line_matching(output, rf"^newton   : +{NUMBER} s  mAP {NUMBER}  ")
    line_matching(output, rf"^liblinear: +{NUMBER} s  mAP {NUMBER}  ")
    line_matching(output, rf"^speed-up {NUMBER}x; same chosen costs: (True|False); max \|AP diff\| {NUMBER}; "
                          rf"\|mAP diff\| {NUMBER}$")
    figures = json.loads(figures_path.read_text())
    assert figures["shape"] == [200, 64] and figures["test"] == 150 and len(figures["chosen_costs"]) == 3
    assert figures["same_costs"] and figures["map_difference"] < 0.05  # the two solvers agree (target)
    assert figures["speedup"] == pytest.approx(figures["liblinear_seconds"] / figures["newton_seconds"])
