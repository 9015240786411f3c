from skill_neurons.stages.aux_metrics import split_generation_data

split_generation_data(snakemake)  # noqa: F821
