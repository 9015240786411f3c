from skill_neurons.stages.perturbation import neuronal_importance

neuronal_importance(snakemake)  # noqa: F821
