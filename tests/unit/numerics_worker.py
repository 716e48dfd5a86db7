"""``python numerics_worker.py THREADS [fast]``: prints a JSON of digests of every numerical stage run with THREADS
torch/BLAS threads in deterministic mode (or with oneDNN, ``fast``); test_numerics compares 1 and 2 threads."""
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from ssl_challenge.core.numerics import pin_environment

threads, deterministic = int(sys.argv[1]), "fast" not in sys.argv[2:]
pin_environment(threads, deterministic)  # before torch is imported, as job_logging does

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ssl_challenge.clustering.kmeans import kmeans  # noqa: E402
from ssl_challenge.clustering.pca import pca_whiten_normalise  # noqa: E402
from ssl_challenge.stages.pretraining import train as pretrain  # noqa: E402  (builds the method, then runs the loop)
from ssl_challenge.evaluation.linear_probe import LinearProbeConfig, train_linear_probe_on_features  # noqa: E402
from ssl_challenge.models.necks import BatchNorm1d  # noqa: E402
from ssl_challenge.core.numerics import start_numerics  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from worker import clustered_images, tiny_config, tiny_images  # noqa: E402


def digest(*arrays) -> str:
    hasher = hashlib.sha256()
    for array in arrays:
        hasher.update(np.ascontiguousarray(array.detach().numpy() if torch.is_tensor(array) else array).tobytes())
    return hasher.hexdigest()[:16]


record = start_numerics(threads)
generator = torch.Generator().manual_seed(0)
digests = {}
points = torch.randn(3000, 256, generator=generator)
reduced = pca_whiten_normalise(points, 32)
digests["pca"] = digest(reduced)
clusters = kmeans(reduced, 20, seed=3)
digests["kmeans"] = digest(clusters.assignments, clusters.centroids)
rows = torch.randn(512, 512, generator=generator, requires_grad=True)
norm = BatchNorm1d(512, affine=False)
output = norm(rows)
output.square().sum().backward()
digests["batchnorm1d"] = digest(output, rows.grad, norm.running_var)
features = {"feat5": np.random.default_rng(0).standard_normal((600, 256)).astype(np.float32)}
labels = np.arange(600) % 5
probe = train_linear_probe_on_features(features, labels, features, labels,
                                       LinearProbeConfig(epochs=2, milestones=(1,)), "cpu", seed=0)
digests["probe"] = digest(np.array([entry["train_loss"]["feat5"] for entry in probe["epochs_log"]]))
for method in ("rot", "dc", "odc"):
    images = tiny_images() if method == "rot" else clustered_images()
    # Channel counts that are multiples of 8: the backbone would use channels-last with oneDNN on.
    config = tiny_config(method, epochs=2, backbone={"name": "small_resnet", "widths": [8, 16, 16, 16]})
    with tempfile.TemporaryDirectory() as run_dir:
        model = pretrain(config, images, run_dir, torch.device("cpu"), log=lambda message: None)
        weights = torch.load(model, map_location="cpu", weights_only=False)["backbone"]
    digests[method] = digest(*weights.values())
print(json.dumps({"digests": digests, "numerics": record}))
