"""Draw (or read the published) low-shot samples of one k and save them, so that every model is evaluated on the
same ones."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.lowshot_track import draw_voc07_lowshot_samples

    draw_voc07_lowshot_samples(
        draw_options=snakemake.params.draw,
        k=int(snakemake.wildcards.k),
        published_folder=snakemake.params.published["folder"] if snakemake.params.published else "",
        voc07_root=snakemake.params.roots["voc07"],
        classes=snakemake.params.classes,
        output=snakemake.output.samples,
        log=log,
    )
