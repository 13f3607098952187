"""`hmp flops SOURCE`, as text: the FLOPs pipeline.answers.flops gives, by component, beside every convention."""

from __future__ import annotations


def flops_text(r: dict) -> str:
    c, per = r["components"], r["forward_flops_per_token"]
    lines = [
        f"{r['model']}: {r['total_params']:,} parameters; context {r['context']:,} ({r['context_from']}), batch "
        f"{r['batch']}",
        f"  forward, per token     {per:>20,}  FLOPs: 2 per multiply-add of every matrix a token passes and the "
        "attention over its keys",
    ]
    names = {"attention_projections": "attention projections", "attention_scores": "attention scores + values",
             "mlp": "MLP", "router": "router", "experts": "routed experts (k of E)",
             "shared_experts": "shared experts", "head": "output head", "other_products": "other products"}  # fmt: skip
    lines += [f"    {label:<23}{c[key]:>20,}  {c[key] / per:6.1%}" for key, label in names.items() if c.get(key)]
    how = (
        f"FlopCounterMode over its own forward at {r['measured_at']:,} tokens agrees"
        if r["measured_at"] and not c.get("other_products")
        else f"FlopCounterMode at {r['measured_at']:,} tokens: the products the closed form does not name are "
        "'other products'"
        if r["measured_at"]
        else f"closed form alone ({r['not_measured'] or 'not measured'})"
    )
    lines += [
        f"  checked                {'':>20}  {how}",
        f"  backward, per token    {r['backward_flops_per_token']:>20,}  2 × the forward",
        f"  training, per token    {r['training_flops_per_token']:>20,}  forward + backward",
    ]
    if "training_run_flops" in r:
        lines.append(f"  training run           {r['training_run_flops']:>20.4g}  FLOPs over the tokens given")
    lines.append("  conventions (per token):")
    lines += [f"    {v['name']:<26}{v['flops_per_token']:>20,}  {v['difference']}; {v['definition']}"
              for v in r["conventions"]]  # fmt: skip
    if "mfu" in r:
        m = r["mfu"]
        lines.append(f"  MFU on {m['gpus']} × {m['gpu']} ({m['dtype']} peak {m['peak_flops'] / 1e12:,.1f} TFLOP/s):")
        lines += [f"    {name:<26}{value:>20.1%}" for name, value in m["mfu"].items()]
    return "\n".join(lines)
