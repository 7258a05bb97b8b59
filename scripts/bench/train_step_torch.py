#!/usr/bin/env python3
"""The PyTorch side of the training-step benchmark (docs/training.md, "Fine-tuning the real
sizes"): the step `janus train --lora 16 --micro-batch-size 1` takes on one text-to-image
sample, done by transformers + peft on the same checkpoint and machine.

The model is transformers' `JanusForConditionalGeneration` built from an original-layout
checkpoint exactly as `torch_bench.py` builds it, then cast to float32 (PyTorch's bf16
matrix products are emulated on CPUs without AVX-512 BF16; f32 is what a PyTorch user runs
there). The sample: `--prompt-len` token ids and 576 image codes; the inputs are the ids'
embeddings followed by gen_aligner(gen_embed(codes[:-1])), the targets the 576 codes
predicted through the generation head from the positions before each; one mean
cross-entropy. A step: forward, backward, clip to norm 1, AdamW (lr 1e-4, betas
0.9/0.95, no weight decay), as `janus train` does with the janus-pro/stage3 values.

--mode lora: peft LoRA rank 16, alpha 16 on q,k,v,o,gate,up,down of every decoder layer,
everything else frozen. --mode full: every tensor but the VQ trains, with gradient
checkpointing of the decoder layers.

Prints one JSON line: mean seconds per step over --steps timed steps (after one untimed),
peak RSS in MiB, the loss of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_bench import build_model  # noqa: E402

LLM_TARGETS = (
    r"^model\.language_model\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.(?:gate_proj|up_proj|down_proj))$"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--mode", choices=["lora", "full"], default="lora")
    ap.add_argument("--prompt-len", type=int, default=24)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = build_model(args.model)
    model = model.float()
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=16, lora_alpha=16, target_modules=LLM_TARGETS, lora_dropout=0.0, bias="none")
        model = get_peft_model(model, cfg)
        base = model.base_model.model
    else:
        base = model
        for n, p in model.named_parameters():
            p.requires_grad_(not n.startswith("model.vqmodel."))
        base.model.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    inner = base.model
    vocab = inner.config.text_config.vocab_size
    codebook = inner.config.vq_config.num_embeddings
    ids = (torch.arange(args.prompt_len) * 7 + 1000) % vocab
    codes = (torch.arange(576) * 13) % codebook

    def step() -> float:
        emb = inner.language_model.embed_tokens(ids.unsqueeze(0))
        img = base.prepare_embeddings_for_image_generation(codes[:-1].unsqueeze(0))
        x = torch.cat([emb, img], dim=1)
        hidden = inner.language_model(inputs_embeds=x).last_hidden_state[0]
        p = args.prompt_len
        logits = inner.generation_head(hidden[p - 1 : p - 1 + 576])
        loss = F.cross_entropy(logits, codes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss.detach())

    losses = [step()]
    t0 = time.perf_counter()
    for _ in range(args.steps):
        losses.append(step())
    per_step = (time.perf_counter() - t0) / args.steps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainable = sum(p.numel() for p in params)
    print(json.dumps({
        "mode": args.mode, "seconds_per_step": per_step, "peak_rss_mib": rss,
        "trainable": trainable, "losses": losses, "threads": args.threads,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
