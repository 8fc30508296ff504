"""A random-weight GGUF of Janus' language model, for llama.cpp on the same machine.

Janus' LLM is a plain Llama: this writes a `llama`-architecture GGUF at the
shapes of `../shared/testdata/checkpoint-manifests/<variant>.json`
(`effective_llm_config`), f16 weights drawn from N(0, 0.02), unit norms, and a
placeholder vocabulary of the model's size (llama.cpp needs one to load; the
speed does not depend on it). `llama-quantize` makes the q4_0, q8_0 and f32
files from it; `llama-bench -t 2 -p 0 -n 16 -d 600` then decodes after a
600-token context, as `janus bench --only decode` does. See
`docs/benchmarks.md`, "llama.cpp on the same machine".

    pip install gguf==0.19.0 numpy==2.4.6
    python xtask/llamacpp_gguf.py --variant Janus-Pro-1B --out jp1b-f16.gguf
"""

import argparse
import json
from pathlib import Path

import gguf
import numpy as np


def placeholder_vocab(n):
    """SentencePiece-style pieces: unk, bos, eos, the 256 byte tokens, then
    distinct placeholder words (token types: 2 unknown, 3 control, 6 byte, 1
    normal)."""
    pieces, types = ["<unk>", "<s>", "</s>"], [2, 3, 3]
    pieces += ["<0x%02X>" % b for b in range(256)]
    types += [6] * 256
    pieces += ["\u2581t%d" % i for i in range(len(pieces), n)]
    types += [1] * (n - len(types))
    return [p.encode() for p in pieces[:n]], types[:n]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="Janus-Pro-1B",
                   help="a manifest name: Janus-1.3B, Janus-Pro-1B, Janus-Pro-7B")
    p.add_argument("--manifests", type=Path,
                   default=Path(__file__).resolve().parents[2]
                   / "shared/testdata/checkpoint-manifests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    manifest = args.manifests / f"{args.variant}.json"
    c = json.loads(manifest.read_text())["effective_llm_config"]
    h, inter, layers, vocab = (c["hidden_size"], c["intermediate_size"],
                               c["num_hidden_layers"], c["vocab_size"])
    heads, kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
    head_dim = h // heads

    w = gguf.GGUFWriter(str(args.out), "llama")
    w.add_name(f"{args.variant}-random")
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(h)
    w.add_block_count(layers)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(vocab)
    pieces, types = placeholder_vocab(vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([-float(i) for i in range(vocab)])
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(c["bos_token_id"])
    w.add_eos_token_id(c["eos_token_id"])

    rng = np.random.default_rng(args.seed)

    def weight(rows, cols):
        # [out, in] as in the checkpoint; GGUF stores it as ne = [in, out].
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    ones = np.ones(h, np.float32)
    w.add_tensor("token_embd.weight", weight(vocab, h))
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", weight(vocab, h))
    for i in range(layers):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", ones)
        w.add_tensor(b + "ffn_norm.weight", ones)
        w.add_tensor(b + "attn_q.weight", weight(heads * head_dim, h))
        w.add_tensor(b + "attn_k.weight", weight(kv_heads * head_dim, h))
        w.add_tensor(b + "attn_v.weight", weight(kv_heads * head_dim, h))
        w.add_tensor(b + "attn_output.weight", weight(h, heads * head_dim))
        w.add_tensor(b + "ffn_gate.weight", weight(inter, h))
        w.add_tensor(b + "ffn_up.weight", weight(inter, h))
        w.add_tensor(b + "ffn_down.weight", weight(h, inter))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out} ({args.variant}: {layers} layers, hidden {h}, "
          f"intermediate {inter}, vocab {vocab})")


if __name__ == "__main__":
    main()
