"""Where and how tensors run: device, mixed precision, compilation, progress bars, synchronised timing."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    return device


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _compile_mode(value: bool | str) -> bool | str:
    """True/False, "auto", or a torch.compile mode; "off"/"false"/"none" mean False."""
    if isinstance(value, bool) or value == "auto" or value in COMPILE_MODES:
        return value
    if isinstance(value, str) and value.lower() in ("off", "false", "none", "no"):
        return False
    if isinstance(value, str) and value.lower() in ("on", "true", "yes"):
        return True
    raise ValueError(f"compile must be auto, true, false or one of {', '.join(COMPILE_MODES)}; got {value!r}")


@dataclass(frozen=True)
class Runtime:
    """bf16 autocast on CUDA, float32 on CPU, with the same code path. Images and models are channels_last on
    both: on a 2-core CPU too it speeds up training steps (small_cnn 1.4x, ResNet-9 1.08x, WRN-28-10 1.02x) and
    leaves evaluation within noise."""

    device: torch.device = torch.device("cpu")
    compile: bool | str = False  # True, or a torch.compile mode such as "max-autotune-no-cudagraphs"
    progress: bool = True
    channels_last: bool = True

    @classmethod
    def create(cls, device: str = "auto", compile: bool | str = "auto", progress: bool = True) -> "Runtime":
        """``compile="auto"``: CUDA graphs through torch.compile on CUDA (measured on an H100: recipe A in 18 s
        instead of 29 s, compile included after the first model), nothing on the CPU."""
        resolved = resolve_device(device)
        compile = _compile_mode(compile)
        if resolved.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed batch shapes: autotuned kernels pay for themselves
        if compile == "auto":
            compile = "reduce-overhead" if resolved.type == "cuda" else False
        return cls(resolved, compile, progress)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def step_begin(self) -> None:
        """With CUDA graphs (compile mode reduce-overhead), mark a new step: last step's outputs may be reused."""
        if self.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def compiled(self, model: torch.nn.Module):
        """The model, compiled when asked for (pays on long CUDA runs; compile time is not free)."""
        if not self.compile:
            return model
        return torch.compile(model, mode=self.compile if isinstance(self.compile, str) else None)

    def describe(self) -> dict:
        info = {"device": str(self.device), "compile": self.compile, "torch": torch.__version__}
        if self.cuda:
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info


class Stopwatch:
    """Wall-clock seconds with the device synchronised at both ends (never CPU process time)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.seconds = 0.0

    def __enter__(self) -> "Stopwatch":
        self.runtime.synchronize()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.runtime.synchronize()
        self.seconds = time.perf_counter() - self._start


def seeded_generator(seed: int, salt: int) -> torch.Generator:
    """A CPU generator for one kind of draw of a run: seeded from the run's seed and a per-kind ``salt``, so two
    kinds (a trigger's pattern, REM's spare weights) never share a stream and none reads the global RNG."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + salt) % (2**63))
