from skill_neurons import stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.control_prompt(s.wildcards.control, s.input.model, stages.task_from_params(p), s.output[0], seed=p.seed,
                      n_prompt=p.n_tokens, init=p.init, init_std=p.init_std, hard_prompt=p.hard_prompt)
