rule encode_text:
    """The text of every split under the frozen model, once per task: the prompt runs on top of it."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
    output:
        TEXT_TICKET,
    log:
        out("logs/{model}/encode_text/{task}.log"),
    benchmark:
        out("benchmarks/{model}/encode_text/{task}.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(30, text=True),
    params:
        **TASK,
        **PROMPTING,
        # Only where it is not the default, so that a run made before the option existed does not rerun.
        **({} if TEXT_DTYPE == "float32" else {"text_dtype": TEXT_DTYPE}),
        store=TEXT_STORE,
    script:
        "../scripts/encode_text.py"


rule release_text:
    """The task's text store removed once every job that reads it is done (activations.keep_text_states: false)."""
    input:
        ticket=TEXT_TICKET,
        readers=text_readers,
    output:
        out("{model}/text/{task}.released.json"),
    log:
        out("logs/{model}/release_text/{task}.log"),
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/release_text.py"


rule tune_prompt:
    """Prompt tuning of one seed: only the soft prompt trains, the model stays frozen."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        text=TEXT_TICKET,
    output:
        prompt=out("{model}/prompts/{task}/seed{seed}/prompt.safetensors"),
        curve=out("{model}/prompts/{task}/seed{seed}/curve.parquet"),
        metrics=out("{model}/prompts/{task}/seed{seed}/metrics.json"),
    log:
        out("logs/{model}/tune_prompt/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/tune_prompt/{task}/seed{seed}.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(120, text=True),
    params:
        **TASK,
        **TUNING,
        # Not an output: Snakemake deletes the outputs of a killed job, the checkpoint must survive it.
        checkpoint=out("{model}/checkpoints/{task}/seed{seed}.pt"),
    script:
        "../scripts/tune_prompt.py"
