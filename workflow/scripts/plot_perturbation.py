from skill_neurons.stages.plots import plot_perturbation

plot_perturbation(snakemake)  # noqa: F821
