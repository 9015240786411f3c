from skill_neurons.stages.controls import random_model

random_model(snakemake)  # noqa: F821
