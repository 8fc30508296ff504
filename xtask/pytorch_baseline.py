"""PyTorch reference timings at Janus-Pro-1B shapes, for ratios on the same machine.

Mirrors `cargo xtask bench --random-weights` and the measurements of
`../shared/docs/baseline-pytorch.md`: the language model is transformers'
`LlamaForCausalLM` (what the official Janus code instantiates), the SigLIP tower
is timm's `VisionTransformer` with the Janus settings, and the VQ decoder is
written here from the architecture in `../shared/docs/janus-reference.md` §5
(LlamaGen's code path: bmm attention, nearest upsampling in f32).

    pip install torch==2.5.1 transformers==4.48.3 timm==1.0.12
    python xtask/pytorch_baseline.py --dtype f32 --out torch-f32.json

Same options as the Rust bench: --repeats 3 --decode-tokens 16 --gen-steps 4.
"""

import argparse
import json
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def rss_gb():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024 / 1e9
    return out["VmRSS"], out["VmHWM"]


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(name, unit, per, repeats, run):
    run()  # warm-up
    reset_peak()
    times = []
    for i in range(repeats):
        t = run()
        print(f"  {name}: run {i + 1} {t:.3f} s", flush=True)
        times.append(t / per)
    return {"name": name, "unit": unit, "median": statistics.median(times),
            "min": min(times), "peak_rss_gb": rss_gb()[1]}


class Mlp(nn.Sequential):
    """`MlpProjector` mlp_gelu depth 2 / the gen head's layout."""

    def __init__(self, i, h, o):
        super().__init__(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))


def group_norm(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class Res(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.norm1, self.conv1 = group_norm(i), nn.Conv2d(i, o, 3, padding=1)
        self.norm2, self.conv2 = group_norm(o), nn.Conv2d(o, o, 3, padding=1)
        self.short = nn.Conv2d(i, o, 1) if i != o else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.short(x) + h


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        q = self.q(n).reshape(b, c, h * w).permute(0, 2, 1)
        k = self.k(n).reshape(b, c, h * w)
        a = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)
        v = self.v(n).reshape(b, c, h * w)
        out = torch.bmm(v, a.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj(out)


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        if x.dtype != torch.float32:
            x = F.interpolate(x.float(), scale_factor=2.0, mode="nearest").to(torch.bfloat16)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x)


class VqDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.codebook = nn.Embedding(16384, 8)
        self.post_quant = nn.Conv2d(8, 256, 1)
        self.conv_in = nn.Conv2d(256, 512, 3, padding=1)
        self.mid = nn.Sequential(Res(512, 512), Attn(512), Res(512, 512))
        levels = []
        for i, o, attn, up in [(512, 512, True, True), (512, 256, False, True),
                               (256, 256, False, True), (256, 128, False, True),
                               (128, 128, False, False)]:
            blocks = []
            for r in range(3):
                blocks.append(Res(i if r == 0 else o, o))
                if attn:
                    blocks.append(Attn(o))
            if up:
                blocks.append(Up(o))
            levels.append(nn.Sequential(*blocks))
        self.levels = nn.Sequential(*levels)
        self.norm_out, self.conv_out = group_norm(128), nn.Conv2d(128, 3, 3, padding=1)

    def forward(self, codes):
        e = F.normalize(self.codebook.weight, dim=1)[codes]  # [B, 576, 8]
        b, t, _ = e.shape
        s = int(t**0.5)
        z = e.reshape(b, s, s, 8).permute(0, 3, 1, 2)
        h = self.mid(self.conv_in(self.post_quant(z)))
        h = self.levels(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prefill-tokens", type=int, default=600)
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--gen-steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="")
    p.add_argument("--out")
    a = p.parse_args()
    only = [o for o in a.only.split(",") if o]
    want = lambda m: not only or m in only  # noqa: E731
    torch.set_num_threads(a.threads)
    torch.manual_seed(1234)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]

    import timm.models.vision_transformer as vit
    from transformers import LlamaConfig, LlamaForCausalLM

    t0 = time.time()
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, vocab_size=102400,
                      max_position_embeddings=16384, rms_norm_eps=1e-6,
                      attn_implementation="sdpa")
    llm = LlamaForCausalLM(cfg)
    tower = vit.VisionTransformer(img_size=384, patch_size=16, embed_dim=1024, depth=24,
                                  num_heads=16, mlp_ratio=4, class_token=False,
                                  global_pool="map", num_classes=0,
                                  norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                  act_layer=nn.GELU, weight_init="skip")
    aligner, gen_aligner = Mlp(1024, 2048, 2048), Mlp(8, 2048, 2048)
    gen_head, gen_embed, vq = Mlp(2048, 2048, 16384), nn.Embedding(16384, 8), VqDecoder()
    mods = [llm, tower, aligner, gen_aligner, gen_head, gen_embed, vq]
    for m in mods:
        m.to(dtype).eval()
    load_s = time.time() - t0
    rss_load, _ = rss_gb()
    print(f"torch {torch.__version__} {a.dtype}, {a.threads} threads: built in {load_s:.1f} s, "
          f"RSS {rss_load:.2f} GB", flush=True)
    stats = []
    torch.set_grad_enabled(False)

    def timed(f):
        def run():
            t = time.time()
            f()
            return time.time() - t
        return run

    if want("encode"):
        px = torch.rand(1, 3, 384, 384, dtype=dtype) * 2 - 1
        stats.append(measure("siglip_encode_aligner", "s/image", 1, a.repeats,
                             timed(lambda: aligner(tower.forward_features(px)))))
    n_pre = a.prefill_tokens
    ids = (torch.arange(n_pre) * 7919 + 13) % 102400
    ids = ids.unsqueeze(0)
    if want("prefill"):
        stats.append(measure("llm_prefill", "s/token", n_pre, a.repeats,
                             timed(lambda: llm(ids, use_cache=True, num_logits_to_keep=1))))
    if want("decode"):
        state = {}

        def prefill():
            out = llm(ids, use_cache=True, num_logits_to_keep=1)
            state["cache"], state["logits"] = out.past_key_values, out.logits

        def decode():
            prefill()
            t = time.time()
            for _ in range(a.decode_tokens):
                nxt = state["logits"][:, -1:].argmax(-1)
                out = llm(nxt, past_key_values=state["cache"], use_cache=True)
                state["cache"], state["logits"] = out.past_key_values, out.logits
            return time.time() - t

        stats.append(measure("llm_decode_greedy", "s/token", a.decode_tokens, a.repeats, decode))
    prompt = (torch.arange(30) * 37 + 5) % 102400
    for name, key, par in [("image_gen_step_parallel_1", "gen1", 1),
                           ("image_gen_step_parallel_4", "gen4", 4)]:
        if not want(key):
            continue

        def gen(par=par):
            tokens = prompt.repeat(2 * par, 1)
            tokens[1::2, 1:-1] = 100002  # pad id for the unconditional rows
            emb = llm.model.embed_tokens(tokens)
            out = llm.model(inputs_embeds=emb, use_cache=True)
            t = time.time()
            for step in range(a.gen_steps):
                logits = gen_head(out.last_hidden_state[:, -1, :])
                lc, lu = logits[0::2], logits[1::2]
                probs = torch.softmax(lu + 5.0 * (lc - lu), dim=-1)
                code = torch.multinomial(probs.float(), 1)
                nxt = torch.cat([code, code], dim=1).view(-1)
                emb = gen_aligner(gen_embed(nxt)).unsqueeze(1)
                out = llm.model(inputs_embeds=emb, past_key_values=out.past_key_values,
                                use_cache=True)
            return time.time() - t

        stats.append(measure(name, "s/step", a.gen_steps, a.repeats, gen))
    if want("vq"):
        codes = ((torch.arange(576) * 37 + 11) % 16384).unsqueeze(0)

        def vq_decode():
            img = vq(codes).float()
            ((img.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)

        stats.append(measure("vq_decode", "s/image", 1, a.repeats, timed(vq_decode)))
    print("| measurement | median | min | unit | peak RSS GB |\n|---|---|---|---|---|")
    print(f"| build | {load_s:.2f} | | s | |")
    for s in stats:
        print(f"| {s['name']} | {s['median']:.4f} | {s['min']:.4f} | {s['unit']} | "
              f"{s['peak_rss_gb']:.2f} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"torch": torch.__version__, "dtype": a.dtype, "load_s": load_s,
                       "rss_after_load_gb": rss_load, "stats": stats}, f, indent=1)


if __name__ == "__main__":
    main()
