from skill_neurons import stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
splits = {name: s.input[name] for name in ("train", "dev", "test")}
task = stages.with_label_words(stages.task_from_params(p), s.input.words)
stages.tune(s.input.model, task, splits, dict(s.output), seed=p.seed, n_prompt=p.n_tokens, init=p.init,
            init_std=p.init_std, lr=p.lr, weight_decay=p.weight_decay, batch_size=p.batch_size,
            max_steps=p.max_steps, eval_every=p.eval_every, patience=p.patience, eval_batch_size=p.eval_batch_size,
            max_field_tokens=p.max_field_tokens, precision=p.precision, device=p.device, threads=s.threads,
            text_file=s.input.text)
