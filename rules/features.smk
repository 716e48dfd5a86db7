# Multi-layer features of every model, one job per model and data set (VOC07: trainval and test; Places205: train
# and val, for the cached probe only): the backbone loads once per data set. The pooling plan is in every file.


rule extract_voc07_features:
    input:
        model=model_file("{model}"),
        data=data_input,
    output:
        features=[features_file("{model}", split) for split in DATASET_SPLITS["voc07"]],
    log:
        log_file("features", "{model}", "voc07"),
    benchmark:
        benchmark_file("features", "{model}", "voc07")
    conda:
        conda_environment()
    threads: CONFIG["resources"]["eval_threads"]
    params:
        splits=DATASET_SPLITS["voc07"],
        features=CONFIG["features"],
        roots=roots("voc07"),
        classes=CONFIG["data"]["voc07_classes"],
        code=code_digest("extract_features.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/extract_features.py"


use rule extract_voc07_features as extract_places205_features with:
    output:
        features=[features_file("{model}", split) for split in DATASET_SPLITS["places205"]],
    log:
        log_file("features", "{model}", "places205"),
    benchmark:
        benchmark_file("features", "{model}", "places205")
    params:
        splits=DATASET_SPLITS["places205"],
        features=CONFIG["features"],
        roots=roots("places205"),
        classes=[],
        code=code_digest("extract_features.py"),
        numerics=numerics_mode(),
