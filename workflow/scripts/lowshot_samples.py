"""Draw and save the low-shot samples once, so that every model is evaluated on the same ones."""
from ssl_challenge.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.evaluation.lowshot_track import draw_voc07_lowshot_samples

    draw_voc07_lowshot_samples(
        lowshot_config=snakemake.params.lowshot,
        voc07_root=snakemake.params.roots["voc07"],
        classes=snakemake.params.classes,
        output=snakemake.output.samples,
        log=log,
    )
