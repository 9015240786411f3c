from skill_neurons.stages.prompt import tune_prompt

tune_prompt(snakemake)  # noqa: F821
