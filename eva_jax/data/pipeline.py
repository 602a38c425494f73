"""The grain pipeline: documents -> (FIM) tokens -> packed rows of seq_len+1 with segment ids and positions
-> micro-batches. Deterministic for a seed, sharded by process, and its iterator state is checkpointable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grain
import numpy as np

from eva_jax.config import Config
from eva_jax.data import sources
from eva_jax.data.fim import document_tokens
from eva_jax.data.tokenizer import Tokenizer, TokenizerError, deepseek_v3, train_bpe

DEEPSEEK_VOCAB = 128815


def resolve_tokenizer(cfg: Config, docs: Sequence[str], train_idx: list[int], save_dir: Path) -> Tokenizer:
    """The run's tokenizer: reloaded from `save_dir` when the run already has one, else built and saved."""
    if save_dir.exists():
        return Tokenizer.load(save_dir)
    choice = cfg.data.tokenizer
    if choice == "auto":
        choice = "deepseek_v3" if cfg.model.vocab_size >= DEEPSEEK_VOCAB else "bpe"
    if choice == "deepseek_v3":
        tok = deepseek_v3()
    elif choice == "bpe":
        tok = train_bpe(_sample_texts(docs, train_idx, cfg.data.bpe_train_bytes), cfg.model.vocab_size)
    else:
        tok = Tokenizer.load(choice)
    if tok.vocab_size > cfg.model.vocab_size:
        raise TokenizerError(f"tokenizer {tok.name!r} has {tok.vocab_size} ids but model.vocab_size="
                             f"{cfg.model.vocab_size}; use a larger vocabulary or data.tokenizer=bpe")
    tok.save(save_dir)
    return tok


def _sample_texts(docs: Sequence[str], indices: list[int], budget: int) -> list[str]:
    order = np.random.default_rng(0).permutation(len(indices))
    texts, used = [], 0
    for j in order:
        text = docs[indices[j]]
        texts.append(text)
        used += len(text)
        if used >= budget:
            break
    return texts


def pieces(docs: Sequence[str], indices: list[int], max_chars: int) -> list[tuple[int, int, int]]:
    """(document, start, stop) character spans: whole documents, the long ones cut after the last line end
    within each `max_chars` window (a hard cut where a window holds none)."""
    out = []
    for doc in indices:
        text, start = docs[doc], 0
        while max_chars and len(text) - start > max_chars:
            cut = text.rfind("\n", start, start + max_chars) + 1
            cut = cut if cut > start else start + max_chars
            out.append((doc, start, cut))
            start = cut
        out.append((doc, start, len(text)))
    return out


def rows(cfg: Config, docs: Sequence[str], indices: list[int], tokenizer: Tokenizer, *, train: bool,
         process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
    """Micro-batches {"tokens", "tokens_segment_ids", "tokens_positions"} of shape [micro_batch, seq_len + 1]."""
    seed, fim_rate = cfg.data.seed, cfg.data.fim_rate
    ds = grain.MapDataset.source(pieces(docs, indices, cfg.data.max_doc_chars))
    if train:
        ds = ds.shuffle(seed=seed).repeat(None)  # reshuffled every epoch
    ds = ds[process_index::process_count]

    def tokenize(i: int, piece: tuple[int, int, int]) -> dict[str, np.ndarray]:
        # A per-element generator keyed by (seed, element index) keeps FIM decisions stable across resumes.
        rng = np.random.default_rng([seed, i])
        doc, start, stop = piece
        text = docs[doc][start:stop]
        return {"tokens": np.asarray(document_tokens(text, tokenizer, rng, fim_rate if train else 0.0), np.int32)}

    packed = grain.experimental.ConcatThenSplitIterDataset(
        ds.map_with_index(tokenize).to_iter_dataset(), length_struct={"tokens": cfg.train.seq_len + 1})
    return packed.batch(cfg.train.micro_batch, drop_remainder=True)


def model_inputs(batch: dict[str, np.ndarray], isolate: bool) -> dict[str, np.ndarray]:
    """Inputs and next-token targets from packed rows. Without isolation, rows are plain causal sequences
    (DeepSeek pre-training); with it, attention and positions follow the packed documents."""
    tokens, seg = batch["tokens"], batch["tokens_segment_ids"]
    # Segment 0 is padding (only the last row of a finite data set has any): never a target.
    mask = seg[..., 1:] > 0
    if "loss_mask" in batch:  # post-training: only the answer's tokens are targets
        mask = mask & batch["loss_mask"][..., 1:]
    out = {"inputs": tokens[..., :-1], "targets": tokens[..., 1:], "target_mask": mask}
    if isolate:
        out.update(segment_ids=seg[..., :-1], target_segment_ids=seg[..., 1:],
                   positions=batch["tokens_positions"][..., :-1])
    return out


def open_data(cfg: Config, workdir: Path, process_index: int = 0, process_count: int = 1):
    """(tokenizer, train iterator dataset, held-out iterator dataset) for a run in `workdir`."""
    docs = sources.open_source(cfg.data.source, cfg.data.text_field)
    train_idx, held_idx = sources.split(docs, cfg.data.heldout_fraction)
    tokenizer = resolve_tokenizer(cfg, docs, train_idx, workdir / "tokenizer")
    train = rows(cfg, docs, train_idx, tokenizer, train=True, process_index=process_index,
                 process_count=process_count)
    heldout = rows(cfg, docs, held_idx, tokenizer, train=False, process_index=process_index,
                   process_count=process_count)
    return tokenizer, train, heldout
