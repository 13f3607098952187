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
             "shared_experts": "shared experts", "head": "output head", "state_space": "state-space projections",
             "convolutions": "short convolutions", "scan": "state readout (C · h)",
             "cross_attention": "cross-attention", "other_products": "other products"}  # fmt: skip
    seq2seq = r.get("encoder_decoder")
    if seq2seq:
        src, target = seq2seq["source"], seq2seq["per_target_token"]
        lines[-1] += f" (per token of {seq2seq['source_tokens']:,} source and {r['context']:,} target tokens)"
        lines.append(f"  per source token       {seq2seq['per_source_token']:>18,}  the encoder, and the decoder's "
                     "cross-attention keys and values over its output")  # fmt: skip
        source_names = {"attention_projections": "attention projections", "attention_scores": "attention scores + "
                        "values", "mlp": "MLP", "convolutions": "convolution stem", "cross_keys_values": "cross keys, "
                        "values"}  # fmt: skip
        lines += [f"    {label:<25}{src[k]:>18,}  {src[k] / seq2seq['per_source_token']:6.1%}"
                  for k, label in source_names.items() if src.get(k)]  # fmt: skip
        lines.append(f"  per target token       {target:>18,}  the decoder and its output head")
    base = seq2seq["per_target_token"] if seq2seq else per
    lines += [f"    {label:<25}{c[key]:>18,}  {c[key] / base:6.1%}" for key, label in names.items()
              if c.get(key) and not (seq2seq and key == "other_products")]  # fmt: skip
    if seq2seq and c.get("other_products"):
        lines.append(f"    {'other products':<25}{c['other_products']:>18,}  per token of both")
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
    lines += [f"    {v['name']:<30}{v['flops_per_token']:>18,}  {v['difference']}; {v['definition']}"
              for v in r["conventions"]]  # fmt: skip
    if "mfu" in r:
        m = r["mfu"]
        lines.append(f"  MFU on {m['gpus']} × {m['gpu']} ({m['dtype']} peak {m['peak_flops'] / 1e12:,.1f} TFLOP/s):")
        lines += [f"    {name:<26}{value:>20.1%}" for name, value in m["mfu"].items()]
    return "\n".join(lines)
