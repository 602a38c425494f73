"""`python -m eva_jax.generate --checkpoint DIR --prompt "..."`: one-off generation from a checkpoint.

`eva_jax.generate` is also the public function (eva_jax/infer/api.py). Importing this module as a submodule
makes Python bind the name `generate` on the package to the module, so the module forwards calls to the
function: `eva_jax.generate(cfg, params, prompts, n)` works either way.
"""

from __future__ import annotations

import argparse
import sys
import types

from eva_jax.infer.api import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva_jax.generate", description="One-off generation.")
    parser.add_argument("--checkpoint", required=True, help="Hugging Face checkpoint directory or training workdir")
    parser.add_argument("--prompt", required=True, help="text (with --chat: the user's message)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speculative", action="store_true", help="draft with the MTP modules")
    args = parser.parse_args(argv)

    # local import: the package root binds this module as `eva_jax.generate`; reading checkpoints (Orbax,
    # safetensors) is the CLI's business, not something `import eva_jax` should load.
    from eva_jax.infer.loading import CheckpointNotFound, load_checkpoint

    try:
        cfg, params, tokenizer = load_checkpoint(args.checkpoint)
        if tokenizer is None:
            raise ValueError(f"{args.checkpoint} has no tokenizer (tokenizer.json), so text cannot be encoded")
        prompt = (tokenizer.encode_chat([{"role": "user", "content": args.prompt}]) if args.chat
                  else tokenizer.encode(args.prompt))
        out = generate(cfg, params, [prompt], args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                       top_k=args.top_k, seed=args.seed, speculative=args.speculative,
                       stop_tokens=(tokenizer.eos_id,))[0]
    except (CheckpointNotFound, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(tokenizer.decode([t for t in out if t != tokenizer.eos_id]))
    return 0


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
