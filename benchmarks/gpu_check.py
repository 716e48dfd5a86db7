"""One command for a machine with one NVIDIA GPU (at most ~8 minutes): the GPU paths of the pipeline, measured.

1. ResNet-50 training steps of ROT, DC and ODC through the engine's own step (``engine.train.train_step``: image
   batch, learning rate, forward, backward, finiteness check, SGD, the method's after-step: ODC's memory at
   ImageNet size, N = 1,281,167, k = 10,000), in images per second, against a pure forward/backward + SGD of
   the same network input (backbone, linear head, cross-entropy) in this process. Per-GPU batches of the
   reference recipes on 8 GPUs: ROT 16 images (64 rotated inputs), DC and ODC 64 images, 224 px. Each step
   includes making its augmented batch from images stored on the device (``data.loading.make_batch``), as the
   training loop does with preloaded images. Target: ratio >= 0.9 (benchmarks/README.md, "Reference anchors").
2. faiss k-means on the GPU at full scale (1,281,167 x 256 -> 10,000 clusters, 20 iterations) and DC's PCA
   (2048 -> 256) on the GPU: the clustering minutes per DC epoch.
3. The VOC07 SVM protocol (5011 x 8192 trainval, 4952 test, 20 classes, 19 costs) with the exact solver on CUDA,
   against the sequential liblinear reference on this machine's CPU (by default timed on 1 class and multiplied
   by 20; ``--reference-classes 20`` times all of them, ~25 min, which the budget stops: see below).

    python benchmarks/gpu_check.py                   # needs CUDA; prints the table
    python benchmarks/gpu_check.py --cpu             # the same code paths at tiny sizes on the CPU (a dry run)

It exits with a message on a machine without CUDA (unless ``--cpu``).

What it needs: torch, numpy and scikit-learn (with scipy), plus pillow and tqdm, which the package's data and
engine modules import at the top (small packages that PyTorch images usually carry). No virtual environment, no
install: the script puts its own tree's ``src`` first on ``sys.path``, and it never imports snakemake, PyYAML,
jsonschema, pandas or matplotlib (tests/benchmarks checks all of this). faiss is optional: without it (or, on a
GPU, with a CPU-only faiss) the k-means row says ``skipped`` and why, and the rest runs.

The time budget (``--budget-seconds``, default 420: 7 minutes, leaving a minute of an 8-minute slot for
starting Python and CUDA and for the parts that cannot be cut). The clock starts when the script starts. Each
part may run until its share of the budget is spent, counted from the start: training until 35 %, clustering
until 60 %, the SVM protocol until 100 % (time an earlier part leaves over goes to the later ones). Within a part:

- training: the six timings (three methods, three pure steps) share what is left of the part equally; each runs
  its warm-up steps, then timed steps until it has ``steps`` of them or its share is spent (at least one);
- k-means: one run with 1 iteration first; the 20-iteration run only if 12 times that fits in what is left of
  the part, else the row gives 10.5 times the 1-iteration run (20 iterations plus the final assignment are about
  21 passes over the points, the 1-iteration run 2) and says "estimated";
- PCA: one run on the full matrix (when the GPU's free memory holds it 3 times over; else on as many rows as fit,
  scaled to N, and the row says so);
- SVM: the exact solver once; the liblinear reference in a separate process that is stopped at the end of the
  budget, in which case the row gives the time reached as a lower bound ("> s") and the ratio as ">=".

What cannot be cut: the warm-up steps, building the methods (ODC's memory at full size), one PCA, one exact SVM
solve and making the synthetic features; the minute left over is for them. At full size on one H100-class GPU
every part should take well under its share (ResNet-50 steps of 64 images take tens of milliseconds; one k-means
iteration is about 6.6 TFLOP of distance products; PCA reads 10.5 GB of features once), except the CPU
reference, whose one class takes about 75 s on a 2-core machine; the shares are what make the 8 minutes hold on
a slower GPU or a busy node. Not yet run on a GPU (none was lent to the session that wrote this): these are
estimates from FLOP counts and the CPU measurements in benchmarks/README.md.
"""
from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts from here: the imports below take seconds on a cold node

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent
# This tree's package first, installed or not (a bare GPU node), and svm_protocol's synthetic features.
for _path in (str(BENCHMARKS), str(BENCHMARKS.parent / "src")):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ssl_challenge.clustering.kmeans import faiss_gpu_device, kmeans  # noqa: E402
from ssl_challenge.clustering.pca import pca_whiten_normalise  # noqa: E402
from ssl_challenge.core.config import from_dict  # noqa: E402
from ssl_challenge.data.images import PreloadedImages  # noqa: E402
from ssl_challenge.data.loading import BatchRequest, make_batch  # noqa: E402
from ssl_challenge.engine.checkpoint import RunPosition  # noqa: E402
from ssl_challenge.engine.train import PretrainConfig, build_optimizer, check_run_settings, train_step  # noqa: E402
from ssl_challenge.stages.pretraining import build_pretraining_method  # noqa: E402

FULL = {"samples": 1_281_167, "clusters": 10_000, "image": 224, "stored": 256, "backbone": {"name": "resnet50"},
        "batches": {"rot": 16, "dc": 64, "odc": 64}, "steps": 20, "warmup": 5, "kmeans_points": 1_281_167,
        "kmeans_dims": 256, "pca_input": 2048, "svm": (5011, 4952, 8192, 20)}
TINY = {"samples": 2000, "clusters": 20, "image": 32, "stored": 40, "backbone": {"name": "small_resnet"},
        "batches": {"rot": 4, "dc": 8, "odc": 8}, "steps": 2, "warmup": 1, "kmeans_points": 5000,
        "kmeans_dims": 16, "pca_input": 64, "svm": (200, 150, 64, 2)}
SHARES = {"training": 0.35, "clustering": 0.60, "svm": 1.0}  # cumulative fractions of the budget (docstring)
KMEANS_ITERATIONS = 20
HEADER = "| measurement | result | baseline | ratio |\n|---|---|---|---|"


class Budget:
    """Seconds left of the run's budget, and the deadline of each part (``SHARES``, counted from ``STARTED``)."""

    def __init__(self, seconds: float, started: float = STARTED):
        self.seconds, self.started = float(seconds), started

    def deadline(self, part: str) -> float:
        return self.started + SHARES[part] * self.seconds

    def left(self, part: str) -> float:
        return max(0.0, self.deadline(part) - time.monotonic())


class RepeatedImages:
    """``samples`` indices over a few stored images (index modulo their count): a training set of ImageNet's
    size for the methods' memories without ImageNet in memory."""

    per_sample_seeds = False  # as the stored images: one generator augments a whole batch

    def __init__(self, images: PreloadedImages, samples: int):
        self.images, self.samples = images, samples

    def __len__(self) -> int:
        return self.samples

    def load_batch(self, indices: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        return self.images.load_batch(indices % len(self.images), augment, generator)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step, device: torch.device, warmup: int, steps: int, deadline: float | None = None) -> float:
    """Median seconds of ``step()`` after ``warmup`` calls: ``steps`` timed calls, fewer (at least one) when
    ``deadline`` (``time.monotonic()``) passes first."""
    for _ in range(warmup):
        step()
    times = []
    while len(times) < steps and (not times or deadline is None or time.monotonic() < deadline):
        synchronise(device)
        start = time.perf_counter()
        step()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def method_step_seconds(name: str, sizes: dict, device: torch.device, images, precision: str,
                        deadline: float | None = None) -> float:
    """One engine step of method ``name`` (median seconds), its state initialised as after the first epoch; the
    batch is made from ``images`` in the step, as the training loop makes it."""
    config = from_dict(PretrainConfig, {
        "method": name, "backbone": sizes["backbone"], "epochs": 1, "batch_size": sizes["batches"][name],
        "optimizer": {"lr": 0.01}, "precision": precision, "channels_last": device.type == "cuda",
        "method_options": {} if name == "rot" else {"num_clusters": sizes["clusters"]}}, where=f"gpu_check.{name}")
    check_run_settings(config, device, world=1, deterministic=False)
    method = build_pretraining_method(config, sizes["samples"]).to(device)
    if config.channels_last:
        method = method.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)
    if name == "dc":
        method.labels.copy_(torch.randint(0, sizes["clusters"], (sizes["samples"],), generator=generator))
        method.clustered.fill_(True)
    if name == "odc":
        dim = method.clustering.options.neck_out_dim
        features = F.normalize(torch.randn(sizes["samples"], dim, generator=generator), dim=1)
        method.clustering.initialise(features.to(device),
                                     torch.randint(0, sizes["clusters"], (sizes["samples"],), generator=generator)
                                     .to(device), seed=0)
    method.train()
    optimizer = build_optimizer(method, config.optimizer)
    run = RunPosition(order=torch.randperm(sizes["samples"], generator=generator))
    iterations = len(run.order) // config.batch_size

    def step():
        start = run.position * config.batch_size
        request = BatchRequest(run.order[start : start + config.batch_size], True, batch_seed=run.iteration)
        batch = make_batch(images, request)
        train_step(method, optimizer, batch, config, run, iterations, config.batch_size, device,
                   method.training_step)
        run.position, run.iteration = (run.position + 1) % iterations, run.iteration + 1

    return timed_steps(step, device, sizes["warmup"], sizes["steps"], deadline)


def pure_step_seconds(inputs: int, sizes: dict, device: torch.device, precision: str,
                      deadline: float | None = None) -> float:
    """A forward/backward + SGD step of the backbone and a linear head on ``inputs`` ready images (no data, no
    method): the floor the method steps are compared with. ``sizes``: backbone, clusters, image, warmup, steps."""
    from ssl_challenge.models.backbones import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone(sizes["backbone"]).to(device)
    head = torch.nn.Linear(backbone.out_dim, sizes["clusters"]).to(device)
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    parameters = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=1e-4)
    batch = torch.randn(inputs, 3, sizes["image"], sizes["image"], device=device)
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, sizes["clusters"], (inputs,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(head(backbone.pooled(batch)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed_steps(step, device, sizes["warmup"], sizes["steps"], deadline)


def share_of(budget: Budget, part: str, timings_left: int) -> float:
    """The deadline of the next of ``timings_left`` timings that share what is left of ``part`` equally."""
    return time.monotonic() + budget.left(part) / max(1, timings_left)


def training_table(sizes: dict, device: torch.device, precision: str, budget: Budget) -> list[str]:
    stored = torch.randint(0, 256, (256, 3, sizes["stored"], sizes["stored"]), dtype=torch.uint8)
    images = RepeatedImages(PreloadedImages(stored.to(device), crop_size=sizes["image"]), sizes["samples"])
    rows, names = [], ("rot", "dc", "odc")
    for number, name in enumerate(names):
        batch = sizes["batches"][name]
        inputs = 4 * batch if name == "rot" else batch  # ROT's network sees the four rotations
        timings_left = 2 * (len(names) - number)
        method = method_step_seconds(name, sizes, device, images, precision,
                                     share_of(budget, "training", timings_left))
        pure = pure_step_seconds(inputs, sizes, device, precision, share_of(budget, "training", timings_left - 1))
        rows.append(f"| {name.upper()} training step ({precision}, {inputs} inputs) | {inputs / method:,.0f} inputs/s | "
                    f"{inputs / pure:,.0f} inputs/s (pure fwd/bwd) | {pure / method:.3f} (target >= 0.9) |")
        print(rows[-1], flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def faiss_skip_reason(device: torch.device) -> str | None:
    """Why k-means cannot run here as this check means it (None: it can): faiss missing, or on a GPU run a faiss
    without GPU support (a CPU k-means at full scale takes an hour: kmeans_scale.py measures it)."""
    try:
        import faiss
    except (ImportError, OSError) as error:  # OSError: a faiss whose shared libraries do not load here
        return f"faiss is not installed here ({error}); install faiss-gpu (requirements-gpu.txt) to time it"
    if device.type != "cuda":
        return None
    try:
        faiss_gpu_device(device, use_gpu=True, faiss=faiss)
    except RuntimeError as error:
        return f"no GPU faiss: {str(error).removeprefix('kmeans: use_gpu=True but ')}"
    return None


def kmeans_seconds(points: torch.Tensor, clusters: int, use_gpu: bool, time_left: float) -> tuple[float, str]:
    """(seconds of a 20-iteration k-means with its final assignment, how they were obtained)."""
    start = time.perf_counter()
    kmeans(points, clusters, iterations=1, seed=0, use_gpu=use_gpu)
    one = time.perf_counter() - start
    if 12 * one > time_left - one:
        return (KMEANS_ITERATIONS + 1) / 2 * one, f"estimated from a 1-iteration run of {one:.1f} s (budget)"
    start = time.perf_counter()
    kmeans(points, clusters, iterations=KMEANS_ITERATIONS, seed=0, use_gpu=use_gpu)
    return time.perf_counter() - start, "measured"


def pca_rows(sizes: dict, device: torch.device) -> int:
    """Rows of the PCA input that fit the device: all of them, unless the GPU's free memory holds fewer than 3
    copies (the input, its centred chunks and the projection)."""
    rows = sizes["kmeans_points"]
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        rows = min(rows, int(free / 3 / (4 * sizes["pca_input"])))
    return max(rows, 2 * sizes["kmeans_dims"])


def clustering_table(sizes: dict, device: torch.device, budget: Budget) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    shape = f"k-means {sizes['kmeans_points']:,d} x {sizes['kmeans_dims']} -> {sizes['clusters']:,d}, 20 it."
    skip = faiss_skip_reason(device)
    if skip:
        kmeans_total, rows = None, [f"| {shape} | skipped: {skip} | | |"]
    else:
        points = torch.randn(sizes["kmeans_points"], sizes["kmeans_dims"], generator=generator)
        where = "GPU faiss" if device.type == "cuda" else "CPU faiss"
        kmeans_total, how = kmeans_seconds(points, sizes["clusters"], device.type == "cuda",
                                           budget.left("clustering"))
        del points
        rows = [f"| {shape} ({where}) | {kmeans_total:.1f} s ({how}) | | |"]
    print(rows[-1], flush=True)

    rows_used = pca_rows(sizes, device)
    cuda_generator = torch.Generator(device).manual_seed(0) if device.type == "cuda" else generator
    features = torch.rand(rows_used, sizes["pca_input"], generator=cuda_generator, device=device)
    synchronise(device)
    start = time.perf_counter()
    pca_whiten_normalise(features, sizes["kmeans_dims"])
    synchronise(device)
    pca_seconds = (time.perf_counter() - start) * sizes["kmeans_points"] / rows_used
    del features
    how = "measured" if rows_used == sizes["kmeans_points"] else f"measured on {rows_used:,d} rows, scaled to N"
    rows.append(f"| PCA {sizes['pca_input']} -> {sizes['kmeans_dims']} + whitening ({device.type}) | "
                f"{pca_seconds:.1f} s ({how}) | | |")
    print(rows[-1], flush=True)
    if kmeans_total is None:
        rows.append(f"| clustering per DC epoch | skipped: no k-means (PCA alone {pca_seconds / 60:.2f} min) | | |")
    else:
        rows.append(f"| clustering per DC epoch | {(kmeans_total + pca_seconds) / 60:.2f} min | | |")
    print(rows[-1], flush=True)
    return rows


def reference_svm(svm_sizes: tuple, classes: int, answer) -> None:
    """The liblinear reference on the first ``classes`` classes (a separate process: it can be stopped). Sends
    "ready" when its features are made (liblinear starts), then the result."""
    from svm_protocol import synthetic_voc_features

    from ssl_challenge.evaluation.svm import protocol_costs, train_and_test_full_svm

    train_x, train_y, test_x, test_y = synthetic_voc_features(*svm_sizes)
    names = [f"class{c:02d}" for c in range(classes)]
    costs = protocol_costs([1.0, 10.0, 100.0], extra_powers=True)
    answer.send("ready")
    base = train_and_test_full_svm(train_x, train_y[:, :classes], test_x, test_y[:, :classes], costs, names,
                                   n_jobs=1, solver="liblinear")
    answer.send({"seconds": base["seconds"], "costs": {name: base["per_class"][name]["cost"] for name in names}})


def timed_reference(svm_sizes: tuple, classes: int, time_left: float) -> tuple[dict | None, float]:
    """``reference_svm`` in a spawned process, stopped after ``time_left`` seconds: (its result, or None when
    stopped; the seconds liblinear had run when stopped, a lower bound on its time)."""
    if time_left <= 0:
        return None, 0.0
    context = multiprocessing.get_context("spawn")  # never fork a process that holds CUDA
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=reference_svm, args=(svm_sizes, classes, sender), daemon=True)
    deadline = time.monotonic() + time_left
    process.start()
    sender.close()
    result, liblinear_started = None, None
    while result is None and receiver.poll(max(0.0, deadline - time.monotonic())):
        try:
            message = receiver.recv()
        except EOFError:  # the process ended without an answer: its traceback is on stderr
            process.join()
            raise RuntimeError(f"the liblinear reference process failed (exit code {process.exitcode})") from None
        if message == "ready":
            liblinear_started = time.monotonic()
        else:
            result = message
    if result is None and process.is_alive():
        process.terminate()
    process.join()
    reached = 0.0 if liblinear_started is None else time.monotonic() - liblinear_started
    return result, reached


def svm_table(sizes: dict, device: torch.device, reference_classes: int, budget: Budget) -> list[str]:
    from svm_protocol import synthetic_voc_features

    from ssl_challenge.evaluation.svm import protocol_costs, train_and_test_full_svm

    train, test, dims, classes = sizes["svm"]
    train_x, train_y, test_x, test_y = synthetic_voc_features(train, test, dims, classes)
    names = [f"class{c:02d}" for c in range(classes)]
    costs = protocol_costs([1.0, 10.0, 100.0], extra_powers=True)
    fast = train_and_test_full_svm(train_x, train_y, test_x, test_y, costs, names, n_jobs=1, solver="newton",
                                   device=str(device))
    timed = max(1, min(reference_classes, classes))
    reference, reached = timed_reference(sizes["svm"], timed, budget.left("svm"))
    how = "timed" if timed == classes else f"{timed} class(es) timed, x {classes / timed:g}"
    head = (f"| SVM protocol {train} x {dims}, {classes} classes, {len(costs)} costs: newton on {device.type} | "
            f"{fast['seconds']:.1f} s | ")
    if reference is None:
        lower = reached * classes / timed
        row = (head + f"liblinear sequential on the CPU: stopped at the budget after {reached:.0f} s on {timed} "
               f"class(es): > {lower:.0f} s | >= {lower / fast['seconds']:.0f}x (target >= 300x) |")
    else:
        reference_seconds = reference["seconds"] * classes / timed
        agree = all(reference["costs"][name] == fast["per_class"][name]["cost"] for name in names[:timed])
        row = (head + f"liblinear sequential on the CPU {reference_seconds:.0f} s ({how}) | "
               f"{reference_seconds / fast['seconds']:.0f}x (target >= 300x); same costs on the timed classes: "
               f"{agree} |")
    print(row, flush=True)
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU: exercises the code, no figures")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--reference-classes", type=int, default=1, help="classes liblinear is timed on")
    parser.add_argument("--skip", nargs="*", default=[], choices=["training", "clustering", "svm"])
    parser.add_argument("--budget-seconds", type=float, default=420.0,
                        help="seconds from the start the parts may take together (see the docstring)")
    args = parser.parse_args()
    if args.cpu:
        device, sizes = torch.device("cpu"), TINY
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (torch.cuda.is_available() is False). Run it on a machine "
                         "with an NVIDIA GPU, or with --cpu for a tiny dry run of the same code on the CPU.")
    else:
        device, sizes = torch.device("cuda", 0), FULL
        print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    budget = Budget(args.budget_seconds)
    print(HEADER, flush=True)
    if "training" not in args.skip:
        training_table(sizes, device, args.precision, budget)
    if "clustering" not in args.skip:
        clustering_table(sizes, device, budget)
    if "svm" not in args.skip:
        svm_table(sizes, device, args.reference_classes, budget)
    print(f"total {time.monotonic() - STARTED:.0f} s (budget {budget.seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
