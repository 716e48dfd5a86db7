# The evaluation tracks: VOC07 full SVM (per layer), VOC07 low-shot SVM (per layer and k), Places205 linear probe.
# Each job's params are what its result depends on: an SVM job gets the costs, not the list of layers.
# One low-shot samples job per k, and one SVM job per model, layer and k.
LOWSHOT_K = CONFIG["evaluation"]["voc07_lowshot"]["k_values"]


rule svm_full:
    input:
        trainval=features_file("{model}", "voc07_trainval"),
        test=features_file("{model}", "voc07_test"),
        data=data_input,
    output:
        result=layer_result_file("{model}", "voc07_svm", "{layer}"),
        scores=test_scores_file(layer_result_file("{model}", "voc07_svm", "{layer}")),
    log:
        log_file("voc07_svm", "{model}", "{layer}"),
    benchmark:
        benchmark_file("voc07_svm", "{model}", "{layer}")
    conda:
        conda_environment()
    threads: CONFIG["resources"]["svm_threads"]
    params:
        svm=planning.svm_options(CONFIG, "voc07_svm"),
        roots=roots("voc07"),
        classes=CONFIG["data"]["voc07_classes"],
        code=code_digest("svm_full.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/svm_full.py"


rule lowshot_samples:
    input:
        data=data_input,
    output:
        samples=lowshot_samples_file("{k}"),
    log:
        log_file("voc07_lowshot_samples", "k{k}"),
    conda:
        conda_environment()
    params:
        draw=planning.lowshot_draw_options(CONFIG),
        published=lambda wildcards: provenance.published_samples_param(
            CONFIG["evaluation"]["voc07_lowshot"]["published_samples"], int(wildcards.k)
        ),
        roots=roots("voc07"),
        classes=CONFIG["data"]["voc07_classes"],
        code=code_digest("lowshot_samples.py"),
    script:
        "../workflow/scripts/lowshot_samples.py"


rule svm_lowshot:
    input:
        trainval=features_file("{model}", "voc07_trainval"),
        test=features_file("{model}", "voc07_test"),
        samples=lowshot_samples_file("{k}"),
        data=data_input,
    output:
        result=layer_result_file("{model}", "voc07_lowshot", "{layer}", "{k}"),
        scores=test_scores_file(layer_result_file("{model}", "voc07_lowshot", "{layer}", "{k}")),
    log:
        log_file("voc07_lowshot", "{model}", "{layer}", "k{k}"),
    benchmark:
        benchmark_file("voc07_lowshot", "{model}", "{layer}", "k{k}")
    conda:
        conda_environment()
    threads: CONFIG["resources"]["svm_threads"]
    params:
        lowshot=planning.svm_options(CONFIG, "voc07_lowshot"),
        roots=roots("voc07"),
        classes=CONFIG["data"]["voc07_classes"],
        code=code_digest("svm_lowshot.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/svm_lowshot.py"


# A layer's track result from its per-k results: adding a k reruns the new k's SVMs and these merges only.
rule merge_lowshot:
    input:
        results=expand(layer_result_file("{{model}}", "voc07_lowshot", "{{layer}}", "{k}"), k=LOWSHOT_K),
        scores=expand(
            test_scores_file(layer_result_file("{{model}}", "voc07_lowshot", "{{layer}}", "{k}")),
            k=LOWSHOT_K,
        ),
    output:
        result=layer_result_file("{model}", "voc07_lowshot", "{layer}"),
        scores=test_scores_file(layer_result_file("{model}", "voc07_lowshot", "{layer}")),
    log:
        log_file("voc07_lowshot", "{model}", "{layer}"),
    conda:
        conda_environment()
    params:
        k_values=LOWSHOT_K,
        code=code_digest("merge_lowshot.py"),
    script:
        "../workflow/scripts/merge_lowshot.py"


rule linear_probe:
    input:
        unpack(linear_probe_input),
    output:
        result=probe_file("{model}", "places205_linear"),
        metrics=probe_metrics_file("{model}", "places205_linear"),
        predictions=test_scores_file(probe_file("{model}", "places205_linear")),
    log:
        log_file("places205_linear", "{model}"),
    benchmark:
        benchmark_file("places205_linear", "{model}")
    conda:
        conda_environment()
    threads: CONFIG["resources"]["eval_threads"]
    params:
        probe=CONFIG["evaluation"]["places205_linear"],
        features=probe_features,
        roots=roots("places205"),
        code=code_digest("linear_probe.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/linear_probe.py"


rule imagenet_linear:
    input:
        model=model_file("{model}"),
        data=data_input,
    output:
        result=probe_file("{model}", "imagenet_linear"),
        metrics=probe_metrics_file("{model}", "imagenet_linear"),
    log:
        log_file("imagenet_linear", "{model}"),
    benchmark:
        benchmark_file("imagenet_linear", "{model}")
    wildcard_constraints:
        model=planning.names_regex(planning.imagenet_linear_models(CONFIG)),
    conda:
        conda_environment()
    threads: CONFIG["resources"]["eval_threads"]
    params:
        probe=CONFIG["evaluation"]["imagenet_linear"],
        features=planning.probe_feature_options(CONFIG, online=True),
        roots=roots("imagenet"),
        code=code_digest("imagenet_linear.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/imagenet_linear.py"
