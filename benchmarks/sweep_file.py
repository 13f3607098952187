"""A sweep file of N config-only models for the sweep benchmark: real architectures (conf/model/) at varied sizes.

Each model starts from a shipped model file and overrides its depth and width, the way a census of published
configs varies: GPT-2-, Llama-, Pythia- (GPT-NeoX), OPT-, BERT-, Mixtral- and Mamba-shaped models, from a few
million to a few billion parameters. Every width keeps whole heads (and whole KV heads for Llama).

    python benchmarks/sweep_file.py 200 > conf/sweep/bench-200.yaml
"""

from __future__ import annotations

import itertools
import sys

# (model file, depth field, width field, heads field, the fields each width d sets) per family
FAMILIES = [
    ("gpt2", "n_layer", "n_embd", "n_head", lambda d: {}),
    ("llama-2-7b", "num_hidden_layers", "hidden_size", "num_attention_heads",
     lambda d: {"intermediate_size": 8 * d // 3 // 64 * 64, "num_key_value_heads": d // 128}),
    ("pythia-70m", "num_hidden_layers", "hidden_size", "num_attention_heads", lambda d: {"intermediate_size": 4 * d}),
    ("opt-125m", "num_hidden_layers", "hidden_size", "num_attention_heads",
     lambda d: {"ffn_dim": 4 * d, "word_embed_proj_dim": d}),
    ("bert-base-uncased", "num_hidden_layers", "hidden_size", "num_attention_heads",
     lambda d: {"intermediate_size": 4 * d}),
    ("mixtral-8x7b", "num_hidden_layers", "hidden_size", "num_attention_heads",
     lambda d: {"intermediate_size": 2 * d, "num_key_value_heads": d // 256}),
    ("mamba-130m", "num_hidden_layers", "hidden_size", None,
     lambda d: {"intermediate_size": 2 * d, "time_step_rank": d // 16}),
]  # fmt: skip
DEPTHS = [2, 4, 6, 8, 12, 16, 24]
WIDTHS = [256, 512, 768, 1024, 1536, 2048]


def models(n: int) -> list[tuple[str, str, dict]]:
    """n (name, model file, architecture overrides), each a different size, cycling through the families."""
    out = []
    grid = itertools.product(DEPTHS, WIDTHS, range(len(FAMILIES)))
    for depth, width, fam in sorted(grid, key=lambda t: (t[2] + t[0] * 7 + t[1]) % 11):
        if len(out) == n:
            break
        base, depth_key, width_key, heads_key, extra = FAMILIES[fam]
        arch = {depth_key: depth, width_key: width, **extra(width)}
        if heads_key:
            arch[heads_key] = width // 64
        out.append((f"{base.split('-')[0]}-l{depth}-d{width}", base, arch))
    if len(out) < n:
        raise SystemExit(f"the grid holds {len(out)} models, fewer than {n}")
    return out


def sweep_yaml(name: str, entries: list[tuple[str, str, dict]]) -> str:
    """The text of conf/sweep/<name>.yaml listing entries (a Hydra config group file, as the shipped sweeps)."""
    lines = ["# @package _global_", f"# {len(entries)} config-only models for benchmarks/bench_sweep.py", "defaults:"]
    lines += [f"  - /model@models.{model}: {base}" for model, base, _ in entries]
    lines += ["  - _self_", "", "models:"]
    for model, _, arch in entries:
        lines += [f"  {model}:", "    stated_size: null", "    architecture:"]
        lines += [f"      {key}: {value}" for key, value in arch.items()]
    lines += ["", f"sweep: {name}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    sys.stdout.write(sweep_yaml(f"bench-{count}", models(count)))
