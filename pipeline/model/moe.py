"""Mixture-of-experts structure, read from module types and the config (never from parameter names).

transformers 5 builds the routed experts of a layer as one module (MixtralExperts, Qwen2MoeExperts,
DeepseekV3Experts, GptOssExperts, OlmoeExperts, ...) holding stacked parameters whose first
dimension is the expert: `gate_up_proj` of shape [E, 2I, d] is E experts' gate and up matrices. The
router that picks k of them per token is a module of its own (`*TopKRouter`). Everything else in the
block that holds them is used by every token: shared experts (DeepSeek's `shared_experts`, Qwen's
`shared_expert` and its `shared_expert_gate`). Layers whose MLP holds no experts module are dense
(DeepSeek's first_k_dense_replace, Qwen's mlp_only_layers) and stay plain `mlp`.

How many experts a layer has and how many each token uses come from the config; a model with
experts modules whose config does not say is an error naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    import torch

# Config fields for the number of routed experts per layer, by family (Mixtral and gpt-oss;
# Qwen2-MoE and OLMoE; DeepSeek-V3), and for the experts each token is routed to.
EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
TOP_K_FIELDS = ("num_experts_per_tok", "experts_per_token", "moe_topk", "moe_top_k", "top_k_experts")


@dataclass(frozen=True)
class Structure:
    """Module paths of a model's routed experts, routers and the blocks that hold them."""

    experts: frozenset[str]
    routers: frozenset[str]
    blocks: frozenset[str]  # parents of experts modules: whatever else they hold is shared by every token

    @property
    def is_moe(self) -> bool:
        return bool(self.experts)

    def component(self, module_path: str) -> str | None:
        """router, experts or shared_experts for a module inside a mixture-of-experts block, else None."""
        if module_path in self.experts:
            return "experts"
        if module_path in self.routers:
            return "router"
        if any(module_path.startswith(block + ".") for block in self.blocks):
            return "shared_experts"
        return None


def is_experts(module: torch.nn.Module) -> bool:
    """A fused routed-experts module: its class is *Experts and it holds stacked (3-D) matrices."""
    own = [p for _, p in module.named_parameters(recurse=False)]
    return type(module).__name__.endswith("Experts") and any(p.dim() == 3 for p in own)


def is_router(module: torch.nn.Module) -> bool:
    """A top-k router module (MixtralTopKRouter, DeepseekV3TopkRouter, GptOssTopKRouter, ...)."""
    return "router" in type(module).__name__.lower() and any(True for _ in module.parameters(recurse=False))


def structure(model: torch.nn.Module) -> Structure:
    experts, routers = set(), set()
    for path, module in model.named_modules():
        if is_experts(module):
            experts.add(path)
        elif is_router(module):
            routers.add(path)
    blocks = {path.rpartition(".")[0] for path in experts}
    return Structure(frozenset(experts), frozenset(routers), frozenset(blocks))


def _field(config: Any, fields: tuple[str, ...]) -> tuple[str | None, int | None]:
    """The first of fields the config sets, read from its text sub-config too (a composite model: Llama 4's
    experts are text_config.num_local_experts)."""
    configs = [config]
    try:
        text = config.get_text_config()
    except Exception:  # noqa: BLE001 - a config without sub-configs
        text = None
    if text is not None and text is not config:
        configs.append(text)
    for cfg in configs:
        for name in fields:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return name, value
    return None, None


def _routed_k(modules: dict[str, Any]) -> int | None:
    """The top_k every router or routing block of the model holds, when they hold one and agree; else None."""
    seen = set()
    for module in modules.values():
        if is_router(module) or any(is_experts(m) for m in module.children()):
            k = getattr(module, "top_k", None)
            if isinstance(k, int) and not isinstance(k, bool) and k > 0:
                seen.add(k)
    return seen.pop() if len(seen) == 1 else None


def settings(
    config: Any, found: Structure, name: str, model_modules: dict[str, Any] | None = None
) -> tuple[int | None, int | None]:
    """(experts per layer E, experts per token k) of a mixture of experts; (None, None) for a dense model.

    k is what the routers (or the blocks that hold them) were built with, their top_k, where the model's modules
    are given (model_modules: dict(model.named_modules())), else the config's field (Gemma 4's routers read
    top_k_experts from the config as they route)."""
    if not found.is_moe:
        return None, None
    _, n_experts = _field(config, EXPERT_COUNT_FIELDS)
    if n_experts is None:
        raise PipelineError(
            f"it has routed experts but its config gives no expert count (one of {', '.join(EXPERT_COUNT_FIELDS)})",
            model=name,
        )
    top_k = _routed_k(model_modules) if model_modules is not None else None
    if top_k is None:
        _, top_k = _field(config, TOP_K_FIELDS)
    if top_k is None:
        raise PipelineError(
            "it has routed experts but its config says not how many each token uses "
            f"(one of {', '.join(TOP_K_FIELDS)})",
            model=name,
        )
    if top_k > n_experts:
        raise PipelineError(f"{top_k} experts per token, but only {n_experts} experts", model=name)
    return n_experts, top_k
