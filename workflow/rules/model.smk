rule prepare_model:
    """The model as safetensors: hub id or folder copied, a packaged GGUF dequantised once."""
    output:
        directory(out("{model}/model")),
    log:
        out("logs/{model}/prepare_model.log"),
    benchmark:
        out("benchmarks/{model}/prepare_model.tsv")
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        **model_resources(30, gpu=False),
    params:
        path=model_leaf("path"),
        gguf_package=model_leaf("gguf_package"),
    script:
        "../scripts/prepare_model.py"
