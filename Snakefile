# skill-neurons: find the neurons of a pre-trained Transformer that encode task skills.
from skill_neurons.config import check_config_files, validate_config
from skill_neurons.io import lock_results

# The embedded default, unless --configfile names another: Snakemake would otherwise merge the two
# (a config's tasks added to the default's). --config overrides apply on top of either.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


check_config_files(workflow.configfiles)
validate_config(config, workflow.source_path("workflow/schemas/config.schema.yaml"))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/prompt.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/ranking.smk"
include: "workflow/rules/words.smk"
include: "workflow/rules/perturbation.smk"
include: "workflow/rules/controls.smk"
include: "workflow/rules/label_words.smk"
include: "workflow/rules/pruning.smk"
include: "workflow/rules/reproduction.smk"
include: "workflow/rules/aux_metrics.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/methods.smk"
include: "workflow/rules/plots.smk"


onstart:
    # One run at a time per results folder, whatever the working directory it was started from.
    lock_results(config["results"])


rule all:
    default_target: True
    input:
        all_outputs(),
    localrule: True
