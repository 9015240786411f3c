from skill_neurons.stages.methods import methods_table

methods_table(snakemake)  # noqa: F821
