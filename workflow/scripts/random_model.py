from skill_neurons import stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
stages.control_model(s.input[0], s.output[0], seed=s.params.seed)
