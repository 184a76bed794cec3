"""Every setting's default and check, read from the one config schema (`config.schema.yaml` in this package).

The workflow validates a whole config against the schema; each stage validates the section it is handed against
the same schema, so a default or a range is written once. The schema also says, per setting, which stage's result
it changes (`x-stage`) or that it only schedules work (`x-scheduling`): the workflow builds each rule's `params:`
from that, and the tests walk it. Imports only the standard library, PyYAML and jsonschema, so that the Snakefile
can use it before any job runs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from importlib import resources
from typing import Any

import jsonschema
import yaml

SCHEMA_FILE = "config.schema.yaml"


@functools.cache
def schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("unetflow").joinpath(SCHEMA_FILE).read_text())


def _with_defaults(validator_class):
    """A validator that fills in every missing property that has a default, recursively."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
                elif "$ref" in prop and name not in instance:
                    target = _resolve(prop["$ref"])
                    if "default" in target:
                        instance[name] = copy.deepcopy(target["default"])
        yield from validate_properties(validator, properties, instance, subschema)

    return jsonschema.validators.extend(validator_class, {"properties": fill})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _resolve(ref: str) -> dict[str, Any]:
    node: Any = schema()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def section_schema(section: str) -> dict[str, Any]:
    """The schema of a section (weights, model, train, train's augment, predict, ..., ingest, synthetic, or a
    dataset or experiment entry) with its references resolved."""
    node = schema()["$defs"].get(section) or schema()["properties"].get(section)
    if node is None:
        raise KeyError(f"no config section {section!r}")
    return _resolve(node["$ref"]) if "$ref" in node else node


def check(section: str, values: dict[str, Any] | None, where: str | None = None) -> dict[str, Any]:
    """`values` of a section checked against the schema, with every default filled in (a new dict).

    Raises ValueError naming the setting (`where`.key, by default the section's name) and what was expected."""
    filled = copy.deepcopy(dict(values or {}))
    root = {"$defs": schema()["$defs"], **section_schema(section)}
    errors = sorted(_Validator(root).iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        name = ".".join([where or section, *map(str, first.absolute_path)])
        raise ValueError(f"config: {name}: {first.message}")
    return filled


def typed_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with nested values given on Snakemake's command line read as YAML where the schema expects no string.

    `snakemake --config 'train={iterations: 5000}'` merges the mapping into the config file's section, but hands
    its values over as strings ('5000'); a string where the schema allows none is parsed as a YAML scalar or list
    (so '5000' becomes 5000 and '[1, 256, 256]' a list), and validation then judges the result. A new dict."""
    return _typed(copy.deepcopy(config), schema(), ())


def _typed(value: Any, node: dict[str, Any], path: tuple[str, ...]) -> Any:
    if "$ref" in node:
        node = {**_resolve(node["$ref"]), **{k: v for k, v in node.items() if k != "$ref"}}
    if isinstance(value, str):
        kinds = node.get("type", [])
        kinds = [kinds] if isinstance(kinds, str) else kinds
        takes_string = "string" in kinds or value in node.get("enum", ()) or not (kinds or "enum" in node)
        if not takes_string:
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            if isinstance(parsed, str) and "number" in kinds:  # PyYAML reads 1e-3 as a string (YAML 1.1)
                with contextlib.suppress(ValueError):
                    return float(parsed)
            return value if isinstance(parsed, dict | str) else parsed
        return value
    if isinstance(value, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, child in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else {})
            if sub.get("type") == "object" and "properties" not in sub and key in schema()["properties"]:
                sub = section_schema(key)  # an experiment's override of a top-level section
            value[key] = _typed(child, sub, (*path, key))
        return value
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_typed(item, node["items"], path) for item in value]
    return value


def defaults(section: str) -> dict[str, Any]:
    """Every setting of a section at its default."""
    return check(section, {})


def default(section: str, key: str) -> Any:
    """The default of one setting (for sections that cannot be filled as a whole, such as a dataset entry)."""
    return copy.deepcopy(section_schema(section)["properties"][key]["default"])


def leaves(node: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """(path, schema) of every setting below `node`, nested sections flattened into paths."""
    if "$ref" in node:
        target = _resolve(node["$ref"])
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if node.get("type") == "object" and "properties" in node:
        for key, child in node["properties"].items():
            yield from leaves(child, (*path, key))
    else:
        yield path, node


def stage_of(leaf: dict[str, Any]) -> str | None:
    """The stage a setting changes the result of, or None for a scheduling setting."""
    if leaf.get("x-scheduling"):
        return None
    stage = leaf.get("x-stage")
    if stage is None:
        raise ValueError(f"schema: setting without x-stage or x-scheduling: {leaf}")
    return stage


def model_changing(train: dict[str, Any]) -> dict[str, Any]:
    """The settings of a checked `train` section that change the trained model: its `x-stage: train` settings, and
    `workers` where hard tiles follow the losses seen so far (then the loader's prefetching changes the tiles)."""
    out = result_settings("train", train, "train")
    if out["hard_tile_share"] > 0:
        out["workers"] = train["workers"]
    return out


def result_settings(section: str, values: dict[str, Any], stage: str) -> dict[str, Any]:
    """The part of a checked section that changes `stage`'s result (nested as in the section)."""
    out: dict[str, Any] = {}
    for path, leaf in leaves(section_schema(section)):
        if stage_of(leaf) != stage:
            continue
        value: Any = values
        for key in path:
            value = value[key]
        target = out
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return out
