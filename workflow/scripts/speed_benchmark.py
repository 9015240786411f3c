from skill_neurons import pruning_stages, stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
variants = {name: s.input[name] for name in ("dense", "skeleton", "skill_neurons")}
pruning_stages.speed(variants, s.output[0], batch_sizes=p.batch_sizes, lengths=p.lengths,
                     reference={"batch": p.reference_batch, "length": p.reference_length}, dtypes=p.dtypes,
                     warmup=p.warmup, repeats=p.repeats, peak_memory=p.peak_memory, device=p.device,
                     threads=s.threads)
