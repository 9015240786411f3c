from skill_neurons.stages.aux_metrics import dump_generation

dump_generation(snakemake)  # noqa: F821
