from pathlib import Path

from skill_neurons import pruning_stages, stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
splits = {name: s.input[name] for name in ("train", "dev", "test")}
pruning_stages.skill_pruning(s.input.model, stages.task_from_params(p), splits, s.input.prompt, s.input.ranking,
                             str(Path(s.input.run) / "baseline.parquet"), dict(s.output), seed=p.seed,
                             keep_share=p.keep_share, layer_share=p.layer_share,
                             prompting=pruning_stages.prompting_from_params(p, s.threads),
                             retuning=pruning_stages.retuning_from_params(p))
