# unetflow: U-Net segmentation of EM volumes, from TIFF stacks to CSV reports.
# Run:  snakemake                                   (embedded synthetic default, config/config.yaml)
#       snakemake --configfile config/isbi2012.yaml (real ISBI 2012 data)
# Data flow and stages: README.md; settings: workflow/schemas/config.schema.yaml.

import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from unetflow.settings import typed_overrides

# A --configfile given on the command line replaces the embedded default instead of merging into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Nested values of --config arrive as strings ('train={iterations: 5000}'): read them as YAML where the schema
# expects a number, a boolean or a list.
config.update(typed_overrides(config))
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
include: "workflow/rules/export.smk"
include: "workflow/rules/view.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
