from skill_neurons.stages.controls import dump_control

dump_control(snakemake)  # noqa: F821
