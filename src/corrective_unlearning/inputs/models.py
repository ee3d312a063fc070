"""The practitioner's model: a file (safetensors or a weights-only PyTorch checkpoint) loaded into a registry
architecture or the practitioner's own (``module.path:callable``, :mod:`.arch`), and a model checked to be finite
and to map the training images to one score per class."""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..training import ImageBank
from .arch import build_arch
from .data import describe


def check_model(model: nn.Module, bank: ImageBank, num_classes: int) -> int:
    """The model's number of outputs, after checking that its weights are finite and that it maps the first
    images of ``bank`` (normalised as in training) to one score per class (at least ``num_classes``)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
    bad = [name for name, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"model: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[:3]}); expected "
                         f"finite weights (was the model saved after its training diverged?)")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = bank.batch(torch.arange(min(2, len(bank)))).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as error:  # the user's model: any failure means it does not take these inputs
        raise ValueError(f"model: it does not accept the training images (a batch of shape {tuple(x.shape)}): "
                         f"{type(error).__name__}: {error}") from error
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        raise ValueError(f"model: expected logits of shape [batch, classes] for a batch of {len(x)}, got "
                         f"{describe(out)}")
    if out.shape[1] < num_classes:
        raise ValueError(f"model: it has {out.shape[1]} outputs but the labels need {num_classes} classes "
                         f"(labels go up to {num_classes - 1}); expected one output per class")
    return int(out.shape[1])


def load_model(path: str | Path, arch: str, num_classes: int, in_channels: int,
               arch_kwargs: dict | None = None, image_size: int | None = None) -> nn.Module:
    """A model built by ``arch`` (a registry name, or ``module.path:callable`` called with ``arch_kwargs`` as
    :func:`.arch.build_arch` says) with the weights of ``path``: safetensors, or a PyTorch checkpoint read with
    ``weights_only=True`` (a state dict, or a dict holding one under ``state_dict`` or ``model``). The weights must
    fit strictly: every missing, unexpected or misshapen key is an error naming them."""
    path = check_model_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError  # lazy: read only for a .safetensors file
        from safetensors.torch import load_file  # lazy: read only for a .safetensors file
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    else:
        if not _looks_like_checkpoint(path):
            raise ValueError(f"{path} is not a readable model file: expected safetensors (.safetensors) or a PyTorch "
                             f"checkpoint written by torch.save (a zip archive or a pickle)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle errors come in many types; all mean the same here
            raise ValueError(
                f"{path} cannot be read as weights only ({type(error).__name__}: {str(error).splitlines()[0]}). "
                f"Checkpoints that need to run pickled code on loading are refused, since that code could do "
                f"anything: save the model's state_dict() (torch.save(model.state_dict(), ...)) or safetensors") \
                from error
        if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
            state = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)), state)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    model = build_arch(arch, num_classes, in_channels, arch_kwargs, image_size)
    expected = model.state_dict()
    state, stripped = _strip_wrapper_prefix(state, expected)
    built = f"{arch} with arguments {arch_kwargs}" if arch_kwargs else arch
    what = f"{path} does not fit a {built} with {num_classes} classes and {in_channels} input channel(s)" + (
        f" (key prefix {stripped!r} of {PREFIXES[stripped]} stripped)" if stripped else "")
    problems = state_dict_mismatch(state, expected)
    if problems:
        raise ValueError(f"{what}: {problems} (check --arch, --arch-kwargs and the data)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{what}: {str(error).splitlines()[0]} (check --arch, --arch-kwargs and the data)") \
            from error
    if stripped:
        warnings.warn(f"{path}: key prefix {stripped!r} ({PREFIXES[stripped]}) stripped from its keys", UserWarning,
                      stacklevel=2)
    return model


# key prefixes that wrappers add to every name of the state dict they save
PREFIXES = {"module.": "a DataParallel / DistributedDataParallel wrapper", "_orig_mod.": "a torch.compile wrapper"}


def _strip_wrapper_prefix(state: dict, expected: dict) -> tuple[dict, str | None]:
    """``state`` without a wrapper's key prefix (:data:`PREFIXES`) that every key has and the model's do not."""
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in expected):
            return {k[len(prefix):]: v for k, v in state.items()}, prefix
    return state, None


def state_dict_mismatch(state: dict, expected: dict, limit: int = 3) -> str:
    """What keeps ``state`` from loading into a model with state dict ``expected`` (the first ``limit`` of each
    kind: shape mismatches, missing and unexpected keys), or '' when it fits."""
    def listing(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")

    shapes = [f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {listing(shapes)}")
    if missing:
        parts.append(f"{len(missing)} key(s) the model has but the file lacks: {listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} key(s) in the file the model lacks: {listing(unexpected)}")
    return "; ".join(parts)


def check_model_file(path: str | Path, what: str = "model file") -> Path:
    """``path`` is an existing file (a folder is refused, naming the model files in it)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".bin"))
        hint = f" (it holds {', '.join(str(path / name) for name in inside[:3])})" if inside else ""
        raise ValueError(f"{what} {path} is a folder; expected a model file (.safetensors or a PyTorch "
                         f"checkpoint){hint}")
    return path


def _looks_like_checkpoint(path: Path) -> bool:
    """torch.save writes a zip archive (or, in its legacy format, a pickle starting with the protocol byte)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"
