"""Track 2: the VOC07 low-shot SVM on one layer of one model for one k, on that k's recorded samples."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.lowshot_track import evaluate_voc07_lowshot

    evaluate_voc07_lowshot(
        trainval_features=snakemake.input.trainval,
        test_features=snakemake.input.test,
        samples_path=snakemake.input.samples,
        layer=snakemake.wildcards.layer,
        lowshot_config=snakemake.params.lowshot,
        voc07_root=snakemake.params.roots["voc07"],
        classes=snakemake.params.classes,
        output=snakemake.output.result,
        scores_output=snakemake.output.scores,
        n_jobs=snakemake.threads,
        log=log,
    )
