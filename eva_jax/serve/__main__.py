"""`python -m eva_jax.serve [--checkpoint DIR] [--host H] [--port P]`: an OpenAI-compatible server.

DIR is a Hugging Face checkpoint directory (config.json + safetensors + a tokenizer) or a training workdir;
without --checkpoint the default training run's newest checkpoint is served.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from eva_jax.infer.batching import EngineConfig
from eva_jax.infer.loading import CheckpointNotFound, default_checkpoint, load_checkpoint
from eva_jax.serve.app import MAX_REQUEST_BYTES, create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva_jax.serve", description=__doc__.split("\n\n")[1])
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the default training run)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-name", default=None, help="the id clients send as `model` (default: the directory)")
    parser.add_argument("--max-batch", type=int, default=8, help="requests decoded together")
    parser.add_argument("--max-seq-len", type=int, default=None, help="context served (default: the model's)")
    parser.add_argument("--num-pages", type=int, default=None, help="latent-cache pages of 16 tokens")
    parser.add_argument("--speculative", action="store_true", help="draft with the MTP modules")
    parser.add_argument("--max-request-bytes", type=int, default=MAX_REQUEST_BYTES,
                        help="larger request bodies are refused with HTTP 413 (default %(default)s)")
    parser.add_argument("--warmup", action="store_true",
                        help="compile the prefill and decode steps before accepting requests")
    args = parser.parse_args(argv)

    try:
        path = args.checkpoint or default_checkpoint()
        cfg, params, tokenizer = load_checkpoint(path)
    except (CheckpointNotFound, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if tokenizer is None:
        print(f"error: {path} has no tokenizer (tokenizer.json); save the model's tokenizer there with "
              f"Tokenizer.save(dir)", file=sys.stderr)
        return 2
    engine = EngineConfig(max_batch=args.max_batch, max_seq_len=args.max_seq_len, num_pages=args.num_pages,
                          speculative=args.speculative)
    if args.max_request_bytes < 1:
        parser.error(f"--max-request-bytes={args.max_request_bytes} must be positive")
    app = create_app(cfg, params, tokenizer, args.model_name or cfg.name, engine, args.max_request_bytes,
                     args.warmup)
    del params  # the engine keeps its own per-layer copy; the stacked one would double the memory
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
