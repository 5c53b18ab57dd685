"""Shared-prefix KV reuse: length buckets, left padding to a bucket, and the split of a batch into
a shared prefix and per-row suffixes.

Prompts behind one system prompt start with the same few hundred tokens. Their keys and values do
not depend on what follows (attention is causal), so they are computed once, for one row, and
every row prefills only its own suffix. Each row attends to

    [ prefix, left-padded to its bucket (one copy, shared) | its own cache: suffix | new tokens ]

with one softmax over both parts; the suffix's RoPE positions continue from the prefix's real
length and masks hide both paddings, so each row sees exactly the keys a full prefill gives it.
The shared prefix is read once per step for the whole batch, not once per row.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from models.transformer import KVCache

MIN_BUCKET = 32
MIN_PREFIX = 16  # a shorter shared prefix is not worth the extra call


def bucket_length(length: int, minimum: int = MIN_BUCKET, half_steps: bool = False) -> int:
    """Lengths are padded up to a power of two (at least `minimum`): one compile per bucket.
    `half_steps` adds the midpoints (minimum x 1.5 x 2^k): twice the compiles, a third less
    padding at worst; for calls whose compile is cheap next to their compute."""
    bucket = minimum
    while bucket < length:
        if half_steps and bucket * 3 // 2 >= length:
            return bucket * 3 // 2
        bucket *= 2
    return bucket


def pad_to_bucket(ids: np.ndarray, mask: np.ndarray, pad_id: int, length: int):
    """Left-pad a batch to `length` columns (padding is masked out, so outputs do not change)."""
    pad = length - ids.shape[1]
    return (np.pad(ids, ((0, 0), (pad, 0)), constant_values=pad_id).astype(np.int32),
            np.pad(mask, ((0, 0), (pad, 0))).astype(np.int32))


class SharedPrefix(NamedTuple):
    """The keys and values of a prompt prefix that every row of a batch starts with (a pytree)."""
    kv_cache: KVCache  # per layer (k, v), each [1 or B, Hkv, P_bucket, Dh]
    kv_mask: jax.Array  # bool [1 or B, P_bucket]: the prefix's real (not padding) slots
    length: jax.Array  # int32 []: real prefix tokens; the suffix's positions start here


def shared_prefix_length(ids: np.ndarray, mask: np.ndarray) -> int:
    """How many tokens every row's real (left-padded) tokens start with, leaving each row at least
    one token of its own: the last prompt token is where steering and the first logits happen."""
    ids, mask = np.asarray(ids), np.asarray(mask).astype(bool)
    lengths = mask.sum(axis=1)
    limit = int(lengths.min()) - 1
    if ids.shape[0] < 2 or limit < 1:
        return 0
    starts = ids.shape[1] - lengths
    heads = np.take_along_axis(ids, starts[:, None] + np.arange(limit)[None, :], axis=1)
    same = (heads == heads[:1]).all(axis=0)
    return limit if same.all() else int(np.argmin(same))


def split_shared_prefix(ids: np.ndarray, mask: np.ndarray, min_length: int = MIN_PREFIX):
    """(prefix ids [P], suffix ids [B, W], suffix mask [B, W]) for a left-padded batch whose rows
    share a prefix of at least `min_length` tokens, else None. The suffixes stay left-padded."""
    ids, mask = np.asarray(ids), np.asarray(mask).astype(bool)
    length = shared_prefix_length(ids, mask)
    if length < max(min_length, 1):
        return None
    lengths = mask.sum(axis=1)
    starts = ids.shape[1] - lengths
    prefix = ids[int(np.argmax(lengths)), starts.min():starts.min() + length]
    width = int(lengths.max()) - length
    columns = np.arange(ids.shape[1])[None, :]
    suffix_mask = mask & (columns >= (starts + length)[:, None])
    return (prefix.astype(np.int32), ids[:, -width:].astype(np.int32),
            suffix_mask[:, -width:].astype(np.int32))
