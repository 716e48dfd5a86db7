# Multi-layer features of every model on every evaluation split, with the pooling plan in their metadata.


rule extract_features:
    input:
        model=model_file("{model}"),
        data=data_input,
    output:
        features=features_file("{model}", "{split}"),
    log:
        log_file("features", "{model}", "{split}"),
    benchmark:
        benchmark_file("features", "{model}", "{split}")
    conda:
        "../envs/pipeline.yaml"
    threads: CONFIG["resources"]["eval_threads"]
    params:
        features=CONFIG["features"],
        roots=split_roots,
        classes=split_classes,
        code=code_digest("extract_features.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/extract_features.py"
