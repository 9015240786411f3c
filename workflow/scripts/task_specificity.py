from skill_neurons.stages.ranking import task_specificity

task_specificity(snakemake)  # noqa: F821
