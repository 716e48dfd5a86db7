"""The DC vs ODC table (wall time, epochs, tracks) and the VOC07 SVM mAP against pretraining time plot."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.reporting.dc_vs_odc import write_dc_vs_odc

    write_dc_vs_odc(snakemake.params.spec, list(snakemake.output.tables), snakemake.output.plot, log)
