from skill_neurons.stages.pruning import skill_neuron_pruning

skill_neuron_pruning(snakemake)  # noqa: F821
