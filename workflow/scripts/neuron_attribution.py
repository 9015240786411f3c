from skill_neurons import pruning_stages, stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
pruning_stages.attribution(s.input.model, stages.task_from_params(p), s.input.train, s.input.prompt, s.output[0],
                           n_examples=p.n_examples, seed=p.seed,
                           prompting=pruning_stages.prompting_from_params(p, s.threads))
