# Pretraining of every model of config["models"] (resumable: see workflow/scripts/pretrain.py), and the
# intermediate backbones kept for time-to-accuracy curves (models named {model}@e{epoch}).


rule pretrain:
    input:
        data=data_input,
        labels=pretrain_extra_inputs,
    output:
        model=model_file("{model}"),
        metrics=f"{RESULTS}/models/{{model}}/metrics.jsonl",
        snapshots=directory(f"{RESULTS}/models/{{model}}/snapshots"),
    log:
        f"{RESULTS}/logs/pretrain/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{model}}.tsv"
    wildcard_constraints:
        model=names_regex(pretrained_models()),
    conda:
        "../envs/pipeline.yaml"
    threads: config["resources"]["torch_threads"]
    params:
        model=pretrain_model_config,
        pretrain_data=config["pretrain_data"],
        roots=data_roots(),
        code=pretrain_code,
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/pretrain.py"


rule snapshot_model:
    input:
        snapshots=f"{RESULTS}/models/{{model}}/snapshots",
    output:
        model=f"{RESULTS}/models/{{model}}@e{{epoch}}/model.pth",
    log:
        f"{RESULTS}/logs/pretrain/{{model}}@e{{epoch}}.log",
    wildcard_constraints:
        model=names_regex(pretrained_models()),
        epoch="[0-9]+",
    conda:
        "../envs/pipeline.yaml"
    params:
        source=lambda wildcards: f"epoch_{int(wildcards.epoch):04d}.pth",
    shell:
        "(cp {input.snapshots}/{params.source} {output.model}.tmp && mv {output.model}.tmp {output.model}) 2> {log}"
