# Prompt transferability (Wang et al. §6.2): a prompt evaluated zero-shot on another task with its label words.


rule prompt_transfer:
    """Each source prompt on this target's test split, and its activation overlap with the target's own prompt."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        text=TEXT_TICKET,
        prompt=out("{model}/prompts/{task}/seed{seed}/prompt.safetensors"),
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
        sources=lambda w: expand(
            out(f"{w.model}/prompts/{{source}}/seed{w.seed}/prompt.safetensors"), source=transfer_sources(w.task)
        ),
    output:
        out("{model}/transfer/{task}/seed{seed}.parquet"),
    log:
        out("logs/{model}/prompt_transfer/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/prompt_transfer/{task}/seed{seed}.tsv")
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(10, text=True),
    params:
        **TASK,
        **PROMPTING,
        sources=lambda w: transfer_sources(w.task),
        skill_share=config["transferability"]["skill_share"],
    script:
        "../scripts/prompt_transfer.py"


rule transferability_table:
    """Transfer accuracy and overlap rates per task pair; the Spearman of each overlap with the accuracy."""
    input:
        pairs=expand(out("{{model}}/transfer/{task}/seed{seed}.parquet"), task=TRANSFER_TARGETS, seed=SEEDS),
        chance=out("{model}/tables/chance.parquet"),
    output:
        **results_table("transferability", "transferability", "Skill neurons", "transferability (§6.2)"),
        correlations=out("{model}/tables/transferability_spearman.parquet"),
    log:
        out("logs/{model}/transferability_table.log"),
    benchmark:
        out("benchmarks/{model}/transferability_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        skill_share=config["transferability"]["skill_share"],
    script:
        "../scripts/transferability_table.py"
