# Track 4 (VOC07 detection with a frozen backbone) and the challenge's submission files. Their path and input
# functions are the last block of rules/common.smk.


rule voc07_detection:
    input:
        model=model_file("{model}"),
        data=data_input,
    output:
        result=detection_output("{model}"),
        detections=detection_zip("{model}"),
        metrics=f"{RESULTS}/eval/{{model}}/voc07_detection.metrics.jsonl",
    log:
        f"{RESULTS}/logs/voc07_detection/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/voc07_detection/{{model}}.tsv"
    wildcard_constraints:
        model=names_regex(detection_models()),
    conda:
        "../envs/pipeline.yaml"
    threads: config["resources"]["torch_threads"]
    params:
        detection=config["evaluation"]["voc07_detection"],
        roots=data_roots(),
        classes=voc07_classes(),
        run_root=f"{RESULTS}/eval/{{model}}/voc07_detection_runs",
        code=code_digest("detection.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/detection.py"


rule submission_files:
    input:
        submission_inputs,
    output:
        manifest=f"{RESULTS}/submission/{{model}}/manifest.json",
    log:
        f"{RESULTS}/logs/submission/{{model}}.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        spec=lambda wildcards: submission_spec(wildcards.model),
        roots=data_roots(),
        classes=voc07_classes(),
        code=code_digest("submission.py"),
    script:
        "../workflow/scripts/submission.py"


rule submission:
    input:
        submission_outputs(),
