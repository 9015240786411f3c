from skill_neurons import stages

stages.setup_logging(snakemake.log[0])  # noqa: F821
stages.convert_model(snakemake.output[0], snakemake.params.path, snakemake.params.gguf_package)  # noqa: F821
