from skill_neurons.stages.model import prepare_model

prepare_model(snakemake)  # noqa: F821
