from skill_neurons import stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.perturbation_sweep(s.input.model, stages.task_from_params(p), s.input.test, s.input.prompt, s.input.run,
                          dict(zip(p.sources, s.input.rankings)), s.output[0], seed=int(s.wildcards.seed),
                          n_prompt=p.n_tokens, max_field_tokens=p.max_field_tokens, precision=p.precision,
                          device=p.device, threads=s.threads, batch_size=p.batch_size, rates=p.rates,
                          modes=p.modes, sigma=p.sigma, max_examples=p.max_examples,
                          positions=p.positions, selectivity_file=s.input.selectivity,
                          text_file=s.input.text)
