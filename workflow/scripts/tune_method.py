from skill_neurons.stages.methods import tune_method

tune_method(snakemake)  # noqa: F821
