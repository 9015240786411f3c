from skill_neurons import stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
splits = {name: s.input[name] for name in ("train", "dev", "test")}
task = stages.with_label_words(stages.task_from_params(p), s.input.words)
stages.dump(s.input.model, task, splits, s.input.prompt, s.output[0], n_prompt=p.n_tokens,
            max_field_tokens=p.max_field_tokens, precision=p.precision, device=p.device, threads=s.threads,
            batch_size=p.batch_size, dtype=p.dtype, max_gb=p.max_gb, text_file=s.input.text)
