# A task's text store (skill_neurons/text_cache.py): encoded once, read by every prompt job, released after.


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
        # its runtime is TEXT_ENCODE_MINUTES alone
        **model_resources(0, text=True),
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
    priority: PRIORITY["RELEASES_DISK"]
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/release_text.py"
