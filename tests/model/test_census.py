"""A census of transformers itself: every model type of CONFIG_MAPPING, its default config, counted.

For every type whose config transformers can build a model class for, the default config (`CONFIG_MAPPING[t]()`,
each family's reference model) is counted through the pipeline's own path (model_class, the meta-device build,
the inventory, the MoE settings, the cache layers of the cost table). Either:
- the count equals transformers' own sum(p.numel()) of the class chosen, built by transformers itself on the
  meta device, every role and component is one the pipeline defines, and roles and components each partition
  the parameters; and the class is the one a config names, never an encoder-decoder's decoder alone;
- or the type is in REFUSED below with its reason, and the pipeline refuses it in one line.

The test prints the census (counted, refused, no model class), so a new transformers release shows what it adds.
"""

from __future__ import annotations

import logging
import re
import warnings

import pytest

from pipeline.core.errors import PipelineError

# Refusals: a class that needs an optional package this project does not install, or a default config that
# transformers itself cannot build (its default is inconsistent). Each is one line naming what is missing.
OPTIONAL = re.compile(r"requires the (timm|natten|detectron2|torchaudio|scipy) library")
REFUSED = {
    # optional packages
    **dict.fromkeys(
        [
            "conditional_detr",
            "dab-detr",
            "deformable_detr",
            "detr",
            "dinat",
            "edgetam",
            "edgetam_vision_model",
            "eomt",
            "eomt_dinov3",
            "videomt",
            "fast_vlm",
            "gemma3n",
            "gemma3n_vision",
            "higgs_audio_v2_tokenizer",
            "layoutlmv2",
            "omdet-turbo",
            "pe_audio_video",
            "pe_audio_video_encoder",
            "pe_video",
            "pe_video_encoder",
            "perception_lm",
            "table-transformer",
            "timm_backbone",
            "timm_wrapper",
        ],
        "optional package",
    ),
    # transformers' own default config does not build (each message is transformers' own)
    "autoformer": "The `prediction_length` config needs to be specified",
    "informer": "The `prediction_length` config needs to be specified",
    "time_series_transformer": "The `prediction_length` config needs to be specified",
    "aya_vision": "embed_dim must be divisible by num_heads",
    "chameleon": "'NoneType' object has no attribute 'get'",
    "emu3": "'NoneType' object has no attribute 'get'",
    "cohere_compass": "KeyError: 'full_attention'",
    "cohere_compass_text": "KeyError: 'full_attention'",
    "dbrx": "object has no attribute 'rope_theta'",
    "deepseek_ocr2": "'NoneType' object is not subscriptable",
    "diffusion_gemma": "must be tuple of ints",
    "dots1": "empty\\(\\) takes 1 positional argument",
    "esm": "must be tuple of ints",
    "granite4_vision": "object of type 'NoneType' has no len",
    "hunyuan_v1_dense": "unsupported operand type\\(s\\) for \\*\\*",
    "hunyuan_v1_moe": "unsupported operand type\\(s\\) for \\*\\*",
    "hunyuan_vl": "unsupported operand type\\(s\\) for \\*\\*",
    "hunyuan_vl_text": "unsupported operand type\\(s\\) for \\*\\*",
    "lfm2_moe": "'NoneType' object is not subscriptable",
    "ministral": "unsupported operand type\\(s\\) for \\*\\*",
    "moonshine_streaming": "has no attribute 'num_key_value_heads'",
    "nemotron": "unsupported operand type\\(s\\) for //",
    "pp_ocrv6_medium_det": "'NoneType' object is not subscriptable",
    "qwen4_exp": "unsupported operand type\\(s\\) for //",
    "qwen4_exp_text": "unsupported operand type\\(s\\) for //",
    "t5gemma2_encoder": "has no attribute 'dropout_rate'",
    "voxtral_realtime_text": "Could not find VoxtralRealtimeTextModel",
    "pp_ocrv5_server_det": "'NoneType' object is not subscriptable",
    "qwen3_omni_moe": "has no attribute 'shared_expert_intermediate_size'",
    "vitmatte": "can only concatenate list",
    # the default has routed experts but no experts-per-token (the published DeepSeek-V2 config says 6)
    "deepseek_v2": "says not how many each token uses",
}
SHARDS = 4


def _types() -> list[str]:
    from transformers import CONFIG_MAPPING

    return sorted(CONFIG_MAPPING.keys())


def _count(model_type: str) -> tuple[str, str]:
    """(outcome, detail): counted / refused / no_class / no_config, the detail a class name or a message."""
    import torch
    from transformers import CONFIG_MAPPING

    from pipeline.cost import cache
    from pipeline.model import build, inventory, moe

    try:
        config = CONFIG_MAPPING[model_type]()
    except Exception as exc:  # noqa: BLE001 - transformers' own default config fails its own validation
        return "no_config", f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    try:
        cls, _ = build.model_class(config, model_type)
    except PipelineError as exc:
        if "has no model class" in str(exc):
            return "no_class", str(exc)
        return "refused", str(exc)
    try:
        model = build.build_meta(config, model_type)
        inv = inventory.inventory(model, model_type)
        moe.settings(config, moe.structure(model), model_type)
        cache.layers(model, model.config, build.is_causal_class(cls, config))
    except PipelineError as exc:
        return "refused", str(exc)
    # the oracle: transformers builds the same class itself, and counts its unique parameters
    built_config = model.config
    with torch.device("meta"):
        oracle = sum(p.numel() for p in cls._from_config(built_config).parameters())
    total = int(inv["numel"].sum())
    assert total == oracle, f"{model_type}: counted {total:,}, transformers {oracle:,}"
    assert inv["name"].is_unique and len(inv) == len(list(model.parameters()))
    for column, allowed in (("role", inventory.ROLES), ("component", inventory.COMPONENTS)):
        assert set(inv[column]) <= set(allowed), f"{model_type}: {set(inv[column]) - set(allowed)}"
        assert inv.groupby(column)["numel"].sum().sum() == total
    assert set(inv["tower"]) and "" not in set(inv["tower"])
    if getattr(config, "is_encoder_decoder", False):  # never its decoder alone
        assert {"encoder", "decoder"} <= set(inv["tower"]), f"{model_type}: {cls.__name__} has no encoder"
    return "counted", cls.__name__


def _run(types: list[str]) -> dict[str, tuple[str, str]]:
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {t: _count(t) for t in types}
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_model_type_counts_or_is_a_listed_refusal(shard, capsys):
    types = _types()[shard::SHARDS]
    found = _run(types)
    for t, (outcome, detail) in found.items():
        if outcome == "refused":
            assert t in REFUSED, f"{t} is refused and not listed: {detail}"
            reason = REFUSED[t]
            assert OPTIONAL.search(detail) if reason == "optional package" else re.search(reason, detail), detail
            assert "\n" not in detail
        else:
            assert t not in REFUSED, f"{t} is listed as refused but now {outcome}: update REFUSED"
    with capsys.disabled():
        counted = sorted(t for t, (o, _) in found.items() if o == "counted")
        refused = sorted(t for t, (o, _) in found.items() if o == "refused")
        none = sorted(t for t, (o, _) in found.items() if o in ("no_class", "no_config"))
        print(f"\ncensus shard {shard}: {len(counted)} counted, {len(refused)} refused, {len(none)} with no model")
        for t in refused:
            print(f"  refused {t}: {found[t][1][:150]}")


def test_at_least_95_percent_of_the_types_with_a_model_class_count():
    # REFUSED is what the shards above check; here: the share it leaves, of every type with a model class
    # whose class can be loaded without an optional package
    from transformers import CONFIG_MAPPING

    from pipeline.model import build

    with_class = 0
    for t in _types():
        try:
            build.model_class(CONFIG_MAPPING[t](), t)
            with_class += 1
        except Exception:  # noqa: BLE001, S112 - no class, or a default config transformers rejects
            continue
    optional = sum(1 for r in REFUSED.values() if r == "optional package")
    inconsistent = len(REFUSED) - optional
    share = 1 - inconsistent / (with_class - optional)
    print(
        f"\ncensus: {with_class} types with a model class, {optional} need an optional package, "
        f"{inconsistent} have a default transformers cannot build: {share:.1%} counted"
    )
    assert share >= 0.95
