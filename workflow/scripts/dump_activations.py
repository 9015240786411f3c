from skill_neurons.stages.activations import dump_activations

dump_activations(snakemake)  # noqa: F821
