from skill_neurons.stages.controls import controls_table

controls_table(snakemake)  # noqa: F821
