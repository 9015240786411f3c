from skill_neurons import stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.control_score(s.input[0], stages.task_from_params(s.params), s.params.seed, dict(s.output))
