"""Track 1: the VOC07 full linear SVM protocol on one layer of one model."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.svm_track import evaluate_voc07_svm

    evaluate_voc07_svm(
        trainval_features=snakemake.input.trainval,
        test_features=snakemake.input.test,
        layer=snakemake.wildcards.layer,
        svm_config=snakemake.params.svm,
        voc07_root=snakemake.params.roots["voc07"],
        classes=snakemake.params.classes,
        output=snakemake.output.result,
        scores_output=snakemake.output.scores,
        n_jobs=snakemake.threads,
        log=log,
    )
