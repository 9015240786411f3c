from skill_neurons import stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.importance(list(s.input), dict(s.output))
