"""The DC vs ODC table (wall time, epochs, tracks) and the VOC07 SVM mAP against pretraining time plot."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from ssl_challenge.jobs import job_logging  # noqa: E402

with job_logging(snakemake) as log:
    from ssl_challenge.ablation import write_dc_vs_odc

    write_dc_vs_odc(snakemake.params.spec, list(snakemake.output.tables), snakemake.output.plot, log)
