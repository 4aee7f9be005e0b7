"""InternLM2 generation speed; every figure is measured in this run, ratios against a named peer.

    python benchmarks/generation.py                  # CPU default, about 1.5 minutes
    python benchmarks/generation.py --layers 12 --hidden 1536 --new-tokens 64 --device cuda

Greedy decoding of ``--new-tokens`` tokens after a ``--prompt``-token prompt, batch ``--batch``, with random
weights at a mid-size InternLM2 shape (default: hidden 768, 6 layers, 12 heads on 6 key/value heads,
intermediate 2048, vocabulary 32000; about 90M parameters), in fp32 and bf16:

* KV cache (``use_cache=True``, the normal path) vs recomputing the whole sequence every step
  (``use_cache=False``), for InternLM2 and for the peer;
* the peer is transformers' ``LlamaForCausalLM`` holding the same weights (``internvl.models.internlm2.to_llama``:
  ``wqkv`` unfused), so both run the same arithmetic and greedy outputs must agree; the ratio column is
  InternLM2 tokens/s over LLaMA tokens/s.

One CPU thread by default: on a machine shared with other jobs, intra-op threads wait on each other whenever
one core is busy, and the timings then measure the neighbours (``--threads 0`` uses torch's default).
The two models alternate within each round, and each figure is the best of ``--rounds`` runs: on a shared
machine other work only ever adds time, so the fastest run is the closest to the code's own speed (as
``timeit`` reports it). Greedy outputs of the two models are compared in every configuration.
"""
from __future__ import annotations

import argparse
import os

import torch

from timing import timed  # benchmarks/timing.py, beside this script
from internvl.models.internlm2 import InternLM2Config, InternLM2ForCausalLM, to_llama


def build(args) -> InternLM2ForCausalLM:
    config = InternLM2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                             num_hidden_layers=args.layers, num_attention_heads=args.heads,
                             num_key_value_heads=args.kv_heads, max_position_embeddings=4096, rms_norm_eps=1e-5,
                             bias=False, rope_theta=1000000, pad_token_id=2)
    torch.manual_seed(0)
    model = InternLM2ForCausalLM(config).eval()
    with torch.no_grad():  # random norms too, so the logits are not near-ties that flip between kernels
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.8, 1.2)
    return model


def _generate_seconds(model, ids, new_tokens: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    return timed(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                        min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache,
                                        pad_token_id=2, eos_token_id=None), ids.device)


def run(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    base = build(args)
    params = sum(p.numel() for p in base.parameters()) / 1e6
    print(f"\n== greedy generation, {args.device}, batch {args.batch}, prompt {args.prompt} + {args.new_tokens} new "
          f"tokens, InternLM2 {params:.0f}M params (hidden {args.hidden}, {args.layers} layers, {args.heads} heads / "
          f"{args.kv_heads} kv, vocab {args.vocab}), {torch.get_num_threads()} CPU threads, "
          f"best of {args.rounds} rounds ==")
    print(f"{'dtype':<10}{'path':<11}{'InternLM2 tok/s':>16}{'LLaMA tok/s':>13}{'ratio':>8}   same tokens")
    load_before = os.getloadavg()[0]
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, args.vocab, (args.batch, args.prompt), generator=gen).to(args.device)
    for dtype in (torch.float32, torch.bfloat16):
        ours = base.to(args.device, dtype)
        peer = to_llama(ours).to(args.device, dtype)
        speed = {}
        for use_cache in (True, False):
            new_tokens = args.new_tokens if use_cache else args.recompute_tokens
            with torch.inference_mode():
                for model in (ours, peer):  # warm-up
                    _generate_seconds(model, ids, 2, use_cache)
                times = {"ours": [], "peer": []}
                outputs = {}
                for _ in range(args.rounds):
                    for key, model in (("ours", ours), ("peer", peer)):
                        seconds, outputs[key] = _generate_seconds(model, ids, new_tokens, use_cache)
                        times[key].append(seconds)
            tps = {k: args.batch * new_tokens / min(v) for k, v in times.items()}
            speed[use_cache] = tps
            same = torch.equal(outputs["ours"], outputs["peer"])
            path = "KV cache" if use_cache else "recompute"
            print(f"{str(dtype).replace('torch.', ''):<10}{path:<11}{tps['ours']:>16.1f}{tps['peer']:>13.1f}"
                  f"{tps['ours'] / tps['peer']:>7.2f}x   {same}")
        print(f"{'':<10}{'cache gain':<11}{speed[True]['ours'] / speed[False]['ours']:>15.1f}x"
              f"{speed[True]['peer'] / speed[False]['peer']:>12.1f}x")
    print(f"(recompute decodes {args.recompute_tokens} tokens, KV cache {args.new_tokens}; tokens/s counts new "
          f"tokens of the whole batch; load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens decoded with the KV cache")
    parser.add_argument("--recompute-tokens", type=int, default=8,
                        help="tokens decoded without a cache (each step reprocesses the whole sequence)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op CPU threads; 0 = torch's choice (see the note above on shared machines)")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=32000)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
