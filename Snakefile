# unetflow: U-Net segmentation of EM volumes, from TIFF stacks to CSV reports.
# Run:  snakemake                                   (embedded synthetic default, config/config.yaml)
#       snakemake --configfile config/isbi2012.yaml (real ISBI 2012 data)
# Data flow and stages: README.md; settings: workflow/schemas/config.schema.yaml.

from snakemake.utils import min_version, validate

min_version("9.0")


# A --configfile given on the command line replaces the embedded default instead of merging into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
