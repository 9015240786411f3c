from skill_neurons.stages.plots import plot_top_neuron

plot_top_neuron(snakemake)  # noqa: F821
