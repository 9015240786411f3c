from skill_neurons import stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
per_control = len(s.params.tasks)
summaries = {control: list(s.input.controls)[i * per_control:(i + 1) * per_control]
             for i, control in enumerate(s.params.controls)}
stages.controls_table(s.params.tasks, summaries, list(s.input.tuned), dict(s.output))
