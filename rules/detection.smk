# Track 4 (VOC07 detection with a frozen backbone) and the challenge's submission files. The path and input
# functions of these rules live here, beside them, in one block.


# ---------------------------------------------------------------- path and input functions (detection, submission)
def detection_models():
    """The models that get a detector (config key evaluation.voc07_detection.models): 'auto' = the configured
    models and the members of the last concatenation; 'all' = every leaderboard row with a trunk; or a list."""
    setting = config["evaluation"]["voc07_detection"]
    if not setting["enabled"]:
        return []
    trunks = pretrained_models() + codc_final_models()
    if setting["models"] == "all":
        return trunks
    if setting["models"] == "auto":
        named = concatenations()
        last = named[list(named)[-1]] if named else []
        return pretrained_models() + [m for m in last if m in trunks and m not in pretrained_models()]
    for name in setting["models"]:
        if name in concatenations():
            raise ValueError(
                f"config key 'evaluation.voc07_detection.models': {name!r} is a concatenation of features; it has "
                "no trunk, so it cannot be a detection backbone. Name its members instead"
            )
        if name not in trunks:
            raise ValueError(
                f"config key 'evaluation.voc07_detection.models': {name!r} is not a leaderboard model with a "
                f"trunk (one of {trunks})"
            )
    return list(setting["models"])


def detection_output(model):
    return f"{RESULTS}/eval/{model}/voc07_detection.json"


def detection_zip(model):
    return f"{RESULTS}/eval/{model}/voc07_detection.zip"


def svm_scores(model):
    return [path.replace(".json", ".scores.npz") for path in svm_outputs(model)]


def lowshot_scores(model):
    return [path.replace(".json", ".scores.npz") for path in lowshot_outputs(model)]


def places205_predictions(model):
    return f"{RESULTS}/eval/{model}/places205_linear.predictions.npz"


def submission_spec(model):
    """What the submission of one model is built from (a param: plain JSON)."""
    spec = {
        "voc07_svm": dict(zip(svm_outputs(model), svm_scores(model))),
        "voc07_lowshot": dict(zip(lowshot_outputs(model), lowshot_scores(model))),
        "places205_linear": {linear_probe_output(model): places205_predictions(model)},
        "voc07_detection": {},
    }
    if model in detection_models():
        spec["voc07_detection"] = {detection_output(model): detection_zip(model)}
    return spec


def submission_inputs(wildcards):
    spec = submission_spec(wildcards.model)
    return [path for track in spec.values() for pair in track.items() for path in pair] + data_input()


def submission_outputs():
    return [f"{RESULTS}/submission/{model}/manifest.json" for model in model_names()]


# ---------------------------------------------------------------- rules
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
