from skill_neurons.stages.perturbation import perturbation_table

perturbation_table(snakemake)  # noqa: F821
