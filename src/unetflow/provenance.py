"""Provenance: what made an output, as one fingerprint that every stage records and checks.

An output's fingerprint is the digest of three things:
- its inputs, each by content: a store written by unetflow by the fingerprint it recorded (read from its metadata
  in O(1), never by hashing the data again), a plain file (a model, a TIFF) by the SHA-256 of its bytes, a zarr
  store from elsewhere by its metadata and the name, size and modification time of every chunk file;
- its result-changing settings (plain values);
- the version of the code that computed it: a digest of the stage's module and of every unetflow module it
  imports, read as syntax trees (comments, docstrings and formatting do not count).
Stores are written under a temporary name and renamed when complete, with the record inside, so a recorded
fingerprint always describes the data beside it. A stage resumes partial work (a training checkpoint, a partly
predicted store) only when the fingerprints match: a path is never proof of content.

Only the standard library is imported: the Snakefile reads `code_version` before any job runs.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PACKAGE = "unetflow"
PACKAGE_DIR = Path(__file__).resolve().parent
DIGEST_LENGTH = 32  # hex characters (128 bits)
RECORD_KEY = "provenance"  # under a store's `unetflow` attributes, or a checkpoint's payload


def digest(value: Any) -> str:
    """A short SHA-256 of plain values (dicts, lists, strings, numbers), independent of key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]


class ContentDigest:
    """A running digest of arrays as they stream past (shape, dtype and bytes of each, in order)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, array: Any) -> None:
        import numpy as np  # numpy only here: keeps the module importable by the Snakefile without it

        a = np.ascontiguousarray(array)
        self._h.update(f"{a.dtype.str}{a.shape}".encode())
        self._h.update(memoryview(a).cast("B"))

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:DIGEST_LENGTH]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:DIGEST_LENGTH]


def make_record(inputs: Mapping[str, str], settings: Mapping[str, Any], code: str) -> dict[str, Any]:
    """The provenance record of an output: its fingerprint and what it was made from."""
    record = {"inputs": dict(inputs), "settings": dict(settings), "code": code}
    return {"fingerprint": digest(record), **record}


def recorded(store: str | Path) -> dict[str, Any] | None:
    """The provenance record a unetflow (zarr v3) store carries, or None."""
    meta = Path(store) / "zarr.json"
    try:
        attributes = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    record = attributes.get(PACKAGE, {}).get(RECORD_KEY)
    return record if isinstance(record, dict) and "fingerprint" in record else None


def _listing_digest(store: Path) -> str:
    """A zarr store from elsewhere: its metadata by content, its chunks by name, size and modification time."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(store):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(store).as_posix()
            if name in ("zarr.json", ".zarray", ".zattrs", ".zgroup"):
                h.update(f"{rel}:{file_digest(path)}\n".encode())
            else:
                st = path.stat()
                h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:DIGEST_LENGTH]


def input_fingerprint(path: str | Path) -> str:
    """How an input is named in a fingerprint: by content, as cheaply as it can be done safely (module doc)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or store")
    record = recorded(path)
    if record is not None:
        return str(record["fingerprint"])
    return _listing_digest(path)


# Code versions ---------------------------------------------------------------------------------------------


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(tree: ast.AST) -> Iterable[str]:
    """Every unetflow module a syntax tree imports, wherever the import stands (lazy imports included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # `from unetflow.models import unet` names a module too
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.cache
def code_modules(module: str) -> tuple[str, ...]:
    """`module` and every unetflow module it imports, directly or not (packages' __init__ included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or _module_file(name) is None:
            continue
        seen.add(name)
        tree = ast.parse(_module_file(name).read_text())  # type: ignore[union-attr]
        todo.extend(m for m in _imports(tree) if m.startswith(PACKAGE))
        todo.extend(p for p in _parents(name) if p != PACKAGE)  # the root holds only the version string
    if module not in seen:
        raise ValueError(f"{module}: not a module of the {PACKAGE} package")
    return tuple(sorted(seen))


@functools.cache
def code_version(module: str) -> str:
    """Digest of the code `module` runs: its syntax tree and those of every unetflow module it imports."""
    trees = {}
    for name in code_modules(module):
        tree = _without_docstrings(ast.parse(_module_file(name).read_text()))  # type: ignore[union-attr]
        trees[name] = ast.dump(tree, annotate_fields=False)
    return digest(trees)


def stage_code(stage: str) -> str:
    """The code version of a pipeline stage (`unetflow.stages.<stage>`)."""
    return code_version(f"{PACKAGE}.stages.{stage}")
