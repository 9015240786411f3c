from skill_neurons.stages.perturbation import perturbation_sweep

perturbation_sweep(snakemake)  # noqa: F821
