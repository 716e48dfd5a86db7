"""Build the embedded data set (Fashion-MNIST in the ImageNet, VOC07 and Places205 layouts)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from ssl_challenge.jobs import job_logging  # noqa: E402

with job_logging(snakemake) as log:
    from ssl_challenge.data.embedded import prepare_embedded_data

    prepare_embedded_data(snakemake.params.embedded, Path(snakemake.output.manifest).parent, log)
