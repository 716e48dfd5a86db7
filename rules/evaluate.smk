# The evaluation tracks: VOC07 full SVM (per layer), VOC07 low-shot SVM (per layer), Places205 linear probe.


rule svm_full:
    input:
        trainval=f"{RESULTS}/features/{{model}}/voc07_trainval.npz",
        test=f"{RESULTS}/features/{{model}}/voc07_test.npz",
        data=data_input,
    output:
        result=f"{RESULTS}/eval/{{model}}/voc07_svm/{{layer}}.json",
        scores=f"{RESULTS}/eval/{{model}}/voc07_svm/{{layer}}.scores.npz",
    log:
        f"{RESULTS}/logs/voc07_svm/{{model}}/{{layer}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/voc07_svm/{{model}}/{{layer}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: config["resources"]["svm_threads"]
    params:
        svm=config["evaluation"]["voc07_svm"],
        roots=data_roots(),
        classes=voc07_classes(),
        code=code_digest("svm_full.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/svm_full.py"


rule lowshot_samples:
    input:
        data=data_input,
    output:
        samples=f"{RESULTS}/eval/voc07_lowshot_samples.json",
    log:
        f"{RESULTS}/logs/voc07_lowshot_samples.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        lowshot=config["evaluation"]["voc07_lowshot"],
        published=published_samples_digest(),
        roots=data_roots(),
        classes=voc07_classes(),
        code=code_digest("lowshot_samples.py"),
    script:
        "../workflow/scripts/lowshot_samples.py"


rule svm_lowshot:
    input:
        trainval=f"{RESULTS}/features/{{model}}/voc07_trainval.npz",
        test=f"{RESULTS}/features/{{model}}/voc07_test.npz",
        samples=rules.lowshot_samples.output.samples,
        data=data_input,
    output:
        result=f"{RESULTS}/eval/{{model}}/voc07_lowshot/{{layer}}.json",
        scores=f"{RESULTS}/eval/{{model}}/voc07_lowshot/{{layer}}.scores.npz",
    log:
        f"{RESULTS}/logs/voc07_lowshot/{{model}}/{{layer}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/voc07_lowshot/{{model}}/{{layer}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: config["resources"]["svm_threads"]
    params:
        lowshot=config["evaluation"]["voc07_lowshot"],
        roots=data_roots(),
        classes=voc07_classes(),
        code=code_digest("svm_lowshot.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/svm_lowshot.py"


rule linear_probe:
    input:
        unpack(linear_probe_input),
    output:
        result=linear_probe_output("{model}"),
        metrics=f"{RESULTS}/eval/{{model}}/places205_linear.metrics.jsonl",
        predictions=f"{RESULTS}/eval/{{model}}/places205_linear.predictions.npz",
    log:
        f"{RESULTS}/logs/places205_linear/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/places205_linear/{{model}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: config["resources"]["eval_threads"]
    params:
        probe=config["evaluation"]["places205_linear"],
        features=config["features"],
        roots=data_roots(),
        code=code_digest("linear_probe.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/linear_probe.py"


rule imagenet_linear:
    input:
        model=model_file("{model}"),
        data=data_input,
    output:
        result=imagenet_linear_output("{model}"),
        metrics=f"{RESULTS}/eval/{{model}}/imagenet_linear.metrics.jsonl",
    log:
        f"{RESULTS}/logs/imagenet_linear/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/imagenet_linear/{{model}}.tsv"
    wildcard_constraints:
        model=names_regex(imagenet_linear_models()),
    conda:
        "../envs/pipeline.yaml"
    threads: config["resources"]["eval_threads"]
    params:
        probe=config["evaluation"]["imagenet_linear"],
        features=config["features"],
        roots=data_roots(),
        code=code_digest("imagenet_linear.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/imagenet_linear.py"
