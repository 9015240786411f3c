rule prepare_model:
    """The model as safetensors: hub id or folder copied, a packaged GGUF dequantised once."""
    output:
        directory(out("{model}/model")),
    params:
        path=model_leaf("path"),
        gguf_package=model_leaf("gguf_package"),
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/prepare_model.log"),
    benchmark:
        out("benchmarks/{model}/prepare_model.tsv")
    resources:
        mem_mb=model_mem_mb,
        runtime=model_runtime(30),
    script:
        "../scripts/prepare_model.py"
