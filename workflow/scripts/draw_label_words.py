from skill_neurons import stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.draw_words(s.input[0], stages.task_from_params(s.params), int(s.wildcards.draw), s.output[0])
