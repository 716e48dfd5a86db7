# Track 4 (VOC07 detection with a frozen backbone) and the challenge's submission files.


rule voc07_detection:
    input:
        model=model_file("{model}"),
        data=data_input,
    output:
        result=probe_file("{model}", "voc07_detection"),
        detections=test_scores_file(probe_file("{model}", "voc07_detection")),
        metrics=probe_metrics_file("{model}", "voc07_detection"),
    log:
        log_file("voc07_detection", "{model}"),
    benchmark:
        benchmark_file("voc07_detection", "{model}")
    wildcard_constraints:
        model=planning.names_regex(planning.detection_models(CONFIG)),
    conda:
        conda_environment()
    threads: CONFIG["resources"]["torch_threads"]
    params:
        detection=CONFIG["evaluation"]["voc07_detection"],
        roots=roots("voc07"),
        classes=CONFIG["data"]["voc07_classes"],
        run_root=runs_dir("voc07_detection", "{model}"),
        code=code_digest("detection.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/detection.py"


rule submission_files:
    input:
        submission_inputs,
    output:
        manifest=submission_manifest("{model}"),
    log:
        log_file("submission", "{model}"),
    conda:
        conda_environment()
    params:
        spec=lambda wildcards: planning.submission_spec(
            CONFIG, wildcards.model, track_files, test_scores_file
        ),
        roots=roots("voc07", "places205"),
        classes=CONFIG["data"]["voc07_classes"],
        code=code_digest("submission.py"),
    script:
        "../workflow/scripts/submission.py"


rule submission:
    input:
        submission_outputs(),
