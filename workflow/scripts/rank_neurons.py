from skill_neurons import stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.rank(stages.task_from_params(s.params), s.params.seeds, s.input.scores, s.input.runs, s.input.metrics,
            dict(s.output))
