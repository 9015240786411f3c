from skill_neurons.stages.pruning import pruning_table

pruning_table(snakemake)  # noqa: F821
