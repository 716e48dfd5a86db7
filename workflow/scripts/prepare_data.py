"""Build the embedded data set (Fashion-MNIST in the ImageNet, VOC07 and Places205 layouts)."""
from pathlib import Path

from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.data.embedded import prepare_embedded_data

    prepare_embedded_data(snakemake.params.embedded, Path(snakemake.output.manifest).parent, log)
