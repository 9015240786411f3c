from skill_neurons import stages

p = snakemake.params  # noqa: F821
stages.setup_logging(snakemake.log[0])  # noqa: F821
task = stages.task_from_params(p)
stages.split_data(task, p.data_root, dict(snakemake.output), p.dev_fraction, p.seed,  # noqa: F821
                  p.max_train, p.max_dev, p.max_test)
