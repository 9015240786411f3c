# skill-neurons: find the neurons of a pre-trained Transformer that encode task skills.
from skill_neurons.config import validate_config


# The embedded default, unless a config was given: --configfile would otherwise be merged into it.
if not config:

    configfile: "config.yaml"


validate_config(config, workflow.source_path("workflow/schemas/config.schema.yaml"))


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/prompt.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/ranking.smk"
include: "workflow/rules/plots.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
