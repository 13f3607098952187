"""Pickle checkpoints (.bin, .pt), only where a model allows them: loaded with torch.load(weights_only=True), each
tensor once, and written as one safetensors file, so every later stage reads one safe format.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError, first_line
from pipeline.core.params import ModelSpec
from pipeline.formats import safetensors_file


def pickle_to_safetensors(spec: ModelSpec, folder: Path, files: list[str], out: Path) -> None:
    """Load pickle shards with torch.load(weights_only=True); write one model.safetensors, each tensor once."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name in files:
        try:
            state = torch.load(folder / name, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types for a file it cannot unpickle safely
            raise PipelineError(
                f"{folder / name}: not loadable with weights_only=True ({first_line(exc)})", model=spec.name
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise PipelineError(f"{folder / name}: not a state dict of tensors", model=spec.name)
        for key, tensor in state.items():
            ident = (
                tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size(),
                tuple(tensor.shape),
            )
            if ident in seen:
                continue  # a tied alias stored twice in the pickle: keep the first name only
            seen.add(ident)
            tensors[key] = tensor.contiguous()
    save_file(tensors, str(out / safetensors_file.SAFETENSORS_SINGLE), metadata={"format": "pt"})
