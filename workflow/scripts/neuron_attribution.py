from skill_neurons.stages.pruning import neuron_attribution

neuron_attribution(snakemake)  # noqa: F821
