rule word_selectivity:
    """The tokens each top skill neuron responds to: embedding cosine and mean activation (Wang et al. Table 2)."""
    input:
        model=out("{model}/model"),
        train=out("data/{task}/train.parquet"),
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
    output:
        **results_table("word_selectivity", "word_selectivity", "Skill neurons", "Table 2", per_task=True),
    log:
        out("logs/{model}/word_selectivity/{task}.log"),
    benchmark:
        out("benchmarks/{model}/word_selectivity/{task}.tsv")
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(30),
    params:
        **TASK,
        **WORD_SELECTIVITY,
    script:
        "../scripts/word_selectivity.py"
