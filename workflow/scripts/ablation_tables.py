"""The CODC ablation table (the seed's Table 2 form) from the VOC07 SVM results of every cell."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from ssl_challenge.jobs import job_logging  # noqa: E402

with job_logging(snakemake) as log:
    from ssl_challenge.ablation import write_codc_ablation_from_results

    write_codc_ablation_from_results(snakemake.params.entries, list(snakemake.output.tables), log)
    from ssl_challenge.tables_provenance import ablation_cells, write_sidecar

    write_sidecar(snakemake.output.provenance, "codc_ablation", ablation_cells(
        snakemake.params.entries, snakemake.params.concatenations, snakemake.config))
