from skill_neurons.stages.aux_metrics import tune_generation

tune_generation(snakemake)  # noqa: F821
