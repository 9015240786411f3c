from skill_neurons import pruning_stages, stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
pruning_stages.selection(s.input.model, stages.task_from_params(p), s.input.test, s.input.prompt, s.input.scores,
                         s.input.ranking, s.output[0], keep_ratios=p.keep_ratios, seed=p.seed,
                         prompting=pruning_stages.prompting_from_params(p, s.threads))
