# Controls (Wang et al. Table 3): the top-1 neuron found without a tuned prompt or without pre-training.


wildcard_constraints:
    control="|".join(CONTROLS),


rule random_model:
    """The model's architecture and tokenizer with random weights."""
    input:
        out("{model}/model"),
    output:
        # Made again from its seed if needed: only its control's prompt and activations read it.
        temp(directory(out("{model}/controls/random_model/seed{seed}/model"))),
    log:
        out("logs/{model}/random_model/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/random_model/seed{seed}.tsv")
    # It makes 0.5 GB (temporary) rather than freeing it: made at the start, before the disk fills (common.smk).
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        **model_resources(10, gpu=False),
    script:
        "../scripts/random_model.py"


rule dump_control:
    """A control's prompt (random vectors or the hard prompt's embeddings) and its activations, as for a tuned prompt."""
    input:
        unpack(split_files),
        model=control_model_dir,
        text=control_text,
    output:
        prompt=out("{model}/controls/{control}/seed{seed}/prompts/{task}.safetensors"),
        activations=scored_only(directory(out("{model}/controls/{control}/seed{seed}/activations/{task}"))),
    log:
        out("logs/{model}/dump_control/{control}/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/dump_control/{control}/{task}/seed{seed}.tsv")
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60, text=True),
    params:
        **TASK,
        **DUMP,
        # Each control reads only its own leaf, so that editing the other's reruns nothing.
        init_std=lambda w: None if w.control == "hard_prompt" else config["prompt"]["init_std"],
        hard_prompt=lambda w: config["tasks"][w.task]["hard_prompt"] if w.control == "hard_prompt" else None,
    script:
        "../scripts/dump_control.py"


rule score_control:
    """A control's neuron scores and the test accuracy of its top-1 neuron."""
    input:
        out("{model}/controls/{control}/seed{seed}/activations/{task}"),
    output:
        scores=out("{model}/controls/{control}/seed{seed}/scores/{task}.parquet"),
        summary=out("{model}/controls/{control}/seed{seed}/scores/{task}.json"),
    log:
        out("logs/{model}/score_control/{control}/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/score_control/{control}/{task}/seed{seed}.tsv")
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        **TASK,
    script:
        "../scripts/score_control.py"


rule controls_table:
    """Top-1 neuron test accuracy: random guess, the three controls, the tuned prompt (Wang et al. Table 3)."""
    input:
        **{
            control: expand(
                out(f"{{{{model}}}}/controls/{control}/seed{{seed}}/scores/{{task}}.json"),
                task=TASKS,
                seed=control_seeds(control),
            )
            for control in CONTROLS
        },
        tuned=expand(out("{{model}}/ranking/{task}/summary.json"), task=TASKS),
    output:
        **results_table("controls", "controls", "Skill neurons", "Table 3 (controls)"),
    log:
        out("logs/{model}/controls_table.log"),
    benchmark:
        out("benchmarks/{model}/controls_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tasks=TASKS,
        controls=list(CONTROLS),
    script:
        "../scripts/controls_table.py"
