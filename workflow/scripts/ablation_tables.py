"""The CODC ablation table (the seed's Table 2 form) from the VOC07 SVM results of every cell."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.reporting.codc_ablation import write_codc_ablation_from_results

    write_codc_ablation_from_results(snakemake.params.entries, list(snakemake.output.tables), log)
    from ssl_challenge.reporting.cell_provenance import ablation_cells, write_sidecar

    write_sidecar(snakemake.output.provenance, "codc_ablation", ablation_cells(
        snakemake.params.entries, snakemake.params.concatenations, snakemake.config))
