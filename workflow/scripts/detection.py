"""Track 4: the frozen-backbone detector of one model, trained on VOC07 trainval and scored on VOC07 test."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.detection_track import evaluate_voc07_detection

    evaluate_voc07_detection(
        model_path=snakemake.input.model,
        model_name=snakemake.wildcards.model,
        detection_config=snakemake.params.detection,
        voc07_root=snakemake.params.roots["voc07"],
        classes=snakemake.params.classes,
        result_output=snakemake.output.result,
        detections_output=snakemake.output.detections,
        metrics_output=snakemake.output.metrics,
        run_root=snakemake.params.run_root,
        threads=snakemake.threads,
        log=log,
        data_workers=snakemake.config["resources"].get("data_workers", 0),  # run-time only: no result depends on it
    )
