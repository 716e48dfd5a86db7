# Pretraining of every model of config["models"] (resumable: see workflow/scripts/pretrain.py).


rule pretrain:
    input:
        data=data_input,
    output:
        model=f"{RESULTS}/models/{{model}}/model.pth",
        metrics=f"{RESULTS}/models/{{model}}/metrics.jsonl",
    log:
        f"{RESULTS}/logs/pretrain/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{model}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: config["resources"]["torch_threads"]
    params:
        model=lambda wildcards: config["models"][wildcards.model],
        pretrain_data=config["pretrain_data"],
        roots=data_roots(),
        code=pretrain_code,
    script:
        "../workflow/scripts/pretrain.py"
