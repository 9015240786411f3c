from skill_neurons.stages.methods import method_sweep

method_sweep(snakemake)  # noqa: F821
