"""Forward passes of a network on tiles, run by an engine chosen at run time (`predict.engine`):

- `eager`: PyTorch as the network is written (the reference, on every device);
- `compile`: `torch.compile` of the same network (a compile of a minute or more per tile shape on CPU);
- `openvino`: the network exported as a graph (traced by `openvino.convert_model`) and run by OpenVINO's CPU
  runtime, compiled once per tile shape; CPU only, needs the `openvino` package (the `engines` extra);
- `auto`: `openvino` on CPU where it is installed and passes the check below, `eager` elsewhere.

Every engine but eager is checked once per run against eager fp32 on a random tile of the run's shape: its
class probabilities may differ by at most `tolerance(precision)` (1e-5 in fp32, the tolerance tiled output keeps
against one whole pass; 0.1 in bf16, about twice what bf16 autocast itself moves a probability, measured 0.055 on
random weights). An engine that is missing, fails to build or misses the tolerance falls back to eager with a
warning; the engine used is recorded in the output's provenance.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from unetflow.runtime import autocast, memory_format
from unetflow.settings import section_schema

log = logging.getLogger(__name__)

ENGINES = tuple(section_schema("predict")["properties"]["engine"]["enum"])
TOLERANCE = {"fp32": 1e-5, "bf16": 0.1}
AUTO_ON_CPU = "openvino"  # what `auto` tries first on CPU (on CUDA: eager)
# Engines whose forward passes take every activation from the C heap (PyTorch's CPU allocator): on CPU they run
# with freed memory kept for the next pass (unetflow.runtime.keep_freed_memory); OpenVINO plans its own memory,
# and the same settings made its passes 8-15% slower (benchmarks/forward_allocator.py --engine openvino).
HEAP_ENGINES = ("eager", "compile")


def wants_freed_memory_kept(engine: str, device: torch.device) -> bool:
    """Whether runs of the engine named `engine` on `device` keep freed memory for the next pass (HEAP_ENGINES).
    Known before anything is built, since the setting must precede the process's threads: `auto` counts as what it
    becomes where nothing fails, OpenVINO on a CPU where it is installed."""
    if engine == "auto":
        engine = AUTO_ON_CPU if device.type == "cpu" and importlib.util.find_spec("openvino") else "eager"
    return device.type == "cpu" and engine in HEAP_ENGINES


class Engine(Protocol):
    """Logits (float32) of a batch of input tiles (N, channels, *spatial) on the engine's device."""

    name: str
    memory_format: torch.memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (package missing, wrong device, conversion failed)."""


def tolerance(precision: str) -> float:
    return TOLERANCE[precision]


class EagerEngine:
    name = "eager"

    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        self.device, self.precision = device, precision
        self.memory_format = memory_format(device, model.config.dims)
        self.model = model.to(device).to(memory_format=self.memory_format).eval()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.model(x.contiguous(memory_format=self.memory_format)).float()


class CompiledEngine(EagerEngine):
    name = "compile"

    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        super().__init__(model, device, precision)
        self.model = torch.compile(self.model, dynamic=False)


class OpenVinoEngine:
    """The network converted once to an OpenVINO graph, compiled per input shape (tiles of a run share one); safe
    to call from several threads (each gets its own infer request)."""

    name = "openvino"
    memory_format = torch.contiguous_format

    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        if device.type != "cpu":
            raise EngineUnavailable(f"openvino runs on CPU, not on {device}")
        # OpenVINO's converter reports each conversion to Google Analytics and writes a client id under ~/intel
        # when the optional `openvino_telemetry` package imports (2 s a conversion here, and a call out from
        # every cluster job): a module entry of None makes that import fail, and the converter then uses its
        # own no-op stand-in. A process that imported the package itself keeps it.
        sys.modules.setdefault("openvino_telemetry", None)
        try:
            import openvino as ov
        except ImportError as exc:
            raise EngineUnavailable("openvino is not installed (pip install openvino)") from exc
        self._core = ov.Core()
        if precision == "bf16" and not openvino_computes_bf16(self._core):
            raise EngineUnavailable(
                "openvino computes bf16 only on CPUs with bf16 instructions (AVX512-BF16, AMX); on this one it would "
                "compute fp32 under a bf16 record"
            )
        self._config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # its tracer is torch.jit's
                self._graph = ov.convert_model(model, example_input=torch.zeros(smallest_tile(model)))
        except Exception as exc:  # a tracer error: this network cannot be exported
            raise EngineUnavailable(f"openvino could not convert the network: {exc}") from exc
        self._compiled: dict[tuple[int, ...], object] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # an infer request per thread: requests are not thread-safe

    def _request(self, shape: tuple[int, ...]):
        requests = self._local.__dict__.setdefault("requests", {})
        if shape not in requests:
            with self._lock:
                if shape not in self._compiled:
                    self._graph.reshape({0: list(shape)})
                    self._compiled[shape] = self._core.compile_model(self._graph, "CPU", self._config)
                requests[shape] = self._compiled[shape].create_infer_request()
        return requests[shape]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        request = self._request(tuple(x.shape))
        result = request.infer({0: np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        return torch.from_numpy(np.array(result[0], dtype=np.float32))  # a copy: the request reuses its buffer


def openvino_computes_bf16(core) -> bool:
    """Does OpenVINO's CPU plugin compute bf16 here? Without bf16 instructions it ignores a bf16 precision hint
    and computes fp32 (seen on an AVX2-only EPYC), which would make the output's recorded precision untrue."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def tile_shape(model: nn.Module, side: int, batch: int = 1) -> tuple[int, ...]:
    """The shape (batch, channels, *spatial) of the input tiles whose output has side length `side`."""
    return (batch, model.config.input_channels, *(g.window(side)[0] for g in model.geometries))


def smallest_tile(model: nn.Module) -> tuple[int, ...]:
    """The shape (1, channels, *spatial) of the smallest input tile the network takes."""
    return tile_shape(model, max(g.step for g in model.geometries))


def build_engine(name: str, model: nn.Module, device: torch.device, precision: str) -> Engine:
    """The engine `name` (not `auto`: see `resolve_engine`) for `model` on `device`; raises EngineUnavailable."""
    if name == "eager":
        return EagerEngine(model, device, precision)
    if name == "compile":
        return CompiledEngine(model, device, precision)
    if name == "openvino":
        return OpenVinoEngine(model, device, precision)
    raise ValueError(f"predict.engine must be one of {ENGINES[1:]} here, got {name!r}")


def engine_difference(engine: Engine, model: nn.Module, device: torch.device, shape: Sequence[int]) -> float:
    """Largest difference in class probability between `engine` and eager fp32 on one random tile of `shape`."""
    x = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0)).to(device)
    eager = EagerEngine(model, device, "fp32")  # outside inference mode: the model's parameters stay trainable
    with torch.inference_mode():
        reference = eager(x).softmax(1)
        found = engine(x).to(device).softmax(1)
    return float((found - reference).abs().max())


def checked_engine(
    name: str, model: nn.Module, device: torch.device, precision: str, tile_shape: Sequence[int] | None = None
) -> Engine:
    """The engine a run uses for `name`, built: `auto` as the module doc says; any engine but eager only once it
    builds and stays within `tolerance(precision)` of eager on a tile of `tile_shape` (the run's; default the
    smallest), else eager (with a warning where it was asked for by name)."""
    if name not in ENGINES:
        raise ValueError(f"predict.engine must be one of {ENGINES}, got {name!r}")
    tile_shape = tuple(tile_shape or smallest_tile(model))
    candidate = (AUTO_ON_CPU if device.type == "cpu" else "eager") if name == "auto" else name
    if candidate == "eager":
        return EagerEngine(model, device, precision)
    try:
        engine = build_engine(candidate, model, device, precision)
        difference = engine_difference(engine, model, device, tile_shape)
    except EngineUnavailable as exc:
        (log.info if name == "auto" else _warn)(f"predict.engine {name}: {exc}; running eager PyTorch")
        return EagerEngine(model, device, precision)
    except Exception as exc:  # an optional engine that fails on this network or machine: the reference runs
        _warn(f"predict.engine {candidate} failed on a tile of {list(tile_shape)} ({exc}); running eager PyTorch")
        return EagerEngine(model, device, precision)
    if difference > tolerance(precision):
        _warn(
            f"predict.engine {candidate}: class probabilities differ from eager PyTorch by {difference:.2e} "
            f"(tolerance {tolerance(precision):.0e} in {precision}); running eager PyTorch"
        )
        return EagerEngine(model, device, precision)
    log.info("predict.engine %s: within %.1e of eager PyTorch", candidate, difference)
    return engine


def resolve_engine(
    name: str, model: nn.Module, device: torch.device, precision: str, tile_shape: Sequence[int] | None = None
) -> str:
    """The name of `checked_engine`'s choice."""
    return checked_engine(name, model, device, precision, tile_shape).name


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)
