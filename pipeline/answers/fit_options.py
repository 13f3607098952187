"""What hmp fit takes and gives: its options (FitOptions, named as the CLI's) and the plan (Plan, its JSON)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """What to plan for; the names are hmp fit's options (--gpu-memory is gpu_memory)."""

    context: int | None = None  # tokens per sequence; None: the model's own positions, else DEFAULT_CONTEXT
    batch: int = 1
    dtype: str | None = (
        None  # the weights', for every value; None: as the checkpoint or quantization_config stores them
    )
    kv_dtype: str = "bfloat16"
    gpu_memory: str = "80GB"  # one GPU's, with its unit
    gpus: int = 1
    tp: int = 1
    ep: int = 1
    train: str | None = None  # None (inference), "full", "lora" or "qlora"
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    checkpointing: bool = False
    revision: str | None = None  # of a Hub id
    name: str | None = None  # the model's name in the answer
    measure: bool = False  # also run MemTracker on the prefill and print its peak beside the plan
    engine: str = "transformers"  # whose allocation: "transformers", "vllm" or "llama.cpp" (pipeline.cost.engines)
    gpu_memory_utilization: float = 0.9  # vLLM's share of each GPU's memory
    max_num_batched_tokens: int | None = None  # vLLM's tokens per step; None: vllm serve's default for the GPU
    max_num_seqs: int | None = None  # vLLM's requests per step; None: vllm serve's default for the GPU
    n_gpu_layers: int | None = None  # llama.cpp's -ngl; None: every layer
    cache_type: str = "f16"  # llama.cpp's -ctk and -ctv

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> FitOptions:
        """The options a mapping names (argparse's namespace as a dict, a query string): other keys ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in values.items() if k in known and v is not None or k == "context"}
        if "lora_targets" in given:
            given["lora_targets"] = tuple(given["lora_targets"])
        return cls(**given)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The plan; as_json() is hmp fit --json, field for field in this order."""

    model: str
    total_params: int
    weights_from: str
    weights_how: str
    weights_bytes: int
    weights_bytes_per_gpu: int
    kv_cache_bytes_per_token: int
    kv_cache_bytes: int
    kv_cache_bytes_full_length: int
    kv_cache_from: str
    state_bytes_per_sequence: int | None
    lora_params: int
    lora_layers: int
    optimizer_and_gradient_bytes: int
    activation_bytes: int
    decode_activation_bytes: int | None
    peak_phase: str
    activations_from: str
    peak_bytes: int
    overhead_bytes: int
    bytes_per_gpu: int
    gpu_memory_bytes: int
    fits: bool
    max_context: int
    max_batch: int
    context: int
    context_from: str
    max_positions: int | None
    latent_attention: bool
    training: str | None
    batch: int
    tp: int
    ep: int
    gpus: int
    way_forward: dict[str, Any] | None
    measured: dict[str, int] | None
    engine: str = "transformers"
    engine_detail: dict[str, Any] | None = None  # the engine's own terms (vLLM's pages and budget, llama.cpp's cells)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
