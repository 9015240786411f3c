from skill_neurons import stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.specificity(s.params.tasks, list(s.input), s.output[0])
