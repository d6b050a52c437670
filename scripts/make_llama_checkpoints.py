#!/usr/bin/env python3
"""Synthetic Llama-shaped checkpoints for the checkpoint-merge benchmark (numpy only).

Writes OUT/base and OUT/ft1..ftN as Hugging Face folders: BF16 tensors with Llama's names
(model.embed_tokens, model.layers.i.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj,
input_layernorm, post_attention_layernorm}, model.norm, lm_head), sharded into files of at most
--shard-mb MB with model.safetensors.index.json, and a config.json (LlamaForCausalLM) that
mergekit reads. A fine-tune is the base plus Gaussian noise of scale 0.01, a different stream per
model. Default shape: hidden 1024, 32 layers, MLP 2816, vocabulary 32000 (about 0.48 B parameters).

Usage: python3 scripts/make_llama_checkpoints.py OUT [--models 3] [--layers 32] [--shard-mb 256]
"""
import argparse
import json
import os
import struct
import zlib

import numpy as np


def tensor_shapes(hidden, layers, intermediate, vocab):
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (hidden, hidden)), (p + "self_attn.k_proj.weight", (hidden, hidden)),
                   (p + "self_attn.v_proj.weight", (hidden, hidden)), (p + "self_attn.o_proj.weight", (hidden, hidden)),
                   (p + "mlp.gate_proj.weight", (intermediate, hidden)), (p + "mlp.up_proj.weight", (intermediate, hidden)),
                   (p + "mlp.down_proj.weight", (hidden, intermediate)),
                   (p + "input_layernorm.weight", (hidden,)), (p + "post_attention_layernorm.weight", (hidden,))]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return shapes


def bf16_bytes(values):
    """float32 → bfloat16 bits, round to nearest even."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype("<u2").tobytes()


def write_shard(path, tensors):
    header, offset = {}, 0
    for name, shape, data in tensors:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, _, data in tensors:
            f.write(data)


def write_model(folder, shapes, seed, noise_seed, shard_bytes, config):
    os.makedirs(folder, exist_ok=True)
    base_rng_seed = seed
    groups, current, size = [], [], 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        if current and size + n > shard_bytes:
            groups.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += n
    groups.append(current)
    weight_map, total = {}, 0
    for k, group in enumerate(groups):
        tensors = []
        for name, shape in group:
            rng = np.random.default_rng([base_rng_seed, zlib.crc32(name.encode())])
            values = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            if noise_seed is not None:
                noise = np.random.default_rng([noise_seed, zlib.crc32(name.encode())])
                values += noise.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
            data = bf16_bytes(values)
            tensors.append((name, shape, data))
            total += len(data)
        file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        write_shard(os.path.join(folder, file), tensors)
        for name, _, _ in tensors:
            weight_map[name] = file
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-mb", type=int, default=256)
    args = parser.parse_args()
    shapes = tensor_shapes(args.hidden, args.layers, args.intermediate, args.vocab)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": args.hidden,
              "intermediate_size": args.intermediate, "num_hidden_layers": args.layers,
              "num_attention_heads": args.hidden // 64, "num_key_value_heads": args.hidden // 64,
              "vocab_size": args.vocab, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "tie_word_embeddings": False}
    shard_bytes = args.shard_mb * 1_000_000
    write_model(os.path.join(args.out, "base"), shapes, 1, None, shard_bytes, config)
    for m in range(1, args.models + 1):
        write_model(os.path.join(args.out, f"ft{m}"), shapes, 1, 100 + m, shard_bytes, config)
    count = sum(int(np.prod(s)) for _, s in shapes)
    print(f"{args.out}: base and {args.models} fine-tunes, {count / 1e9:.3f} B parameters each, BF16")


if __name__ == "__main__":
    main()
