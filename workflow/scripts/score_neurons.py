from skill_neurons import stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.score(s.input[0], stages.task_from_params(s.params), s.output[0])
