from skill_neurons import pruning_stages, stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
metrics = {name: list(s.input[name]) for name in ("skeleton", "skill_neurons")}
pruning_stages.pruning_table(s.params.tasks, metrics, list(s.input.speed), dict(s.output))
