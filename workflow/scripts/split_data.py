from skill_neurons.stages.data import split_data

split_data(snakemake)  # noqa: F821
