# Multi-layer features of every model on every evaluation split, with the pooling plan in their metadata.


rule extract_features:
    input:
        model=f"{RESULTS}/models/{{model}}/model.pth",
        data=data_input,
    output:
        features=f"{RESULTS}/features/{{model}}/{{split}}.npz",
    log:
        f"{RESULTS}/logs/features/{{model}}/{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/features/{{model}}/{{split}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: config["resources"]["eval_threads"]
    params:
        features=config["features"],
        roots=data_roots(),
        classes=voc07_classes(),
        code=code_digest("extract_features.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/extract_features.py"
