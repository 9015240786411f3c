from skill_neurons import stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
splits = {name: s.input[name] for name in ("train", "dev", "test")}
stages.encode(s.input.model, stages.task_from_params(p), splits, s.output[0], n_prompt=p.n_tokens,
              max_field_tokens=p.max_field_tokens, precision=p.precision, device=p.device, threads=s.threads,
              batch_size=p.batch_size)
