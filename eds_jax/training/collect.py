"""Collection: prompts -> the model's own greedy responses -> judge -> good/bad labels -> activations.

Labels (DESIGN.md section 1):
  benign + complied -> good (1)   benign + refused -> bad (0)
  harmful + refused -> good (1)   harmful + complied -> bad (0)
Activations are the hidden state at the last prompt token at the input of every block, taken from
the prefill that starts each batch's generation (or one forward pass per batch when the responses
were cached alone). With `generated_states=K`, the states of the first K tokens of each response
are kept too, as the decode loop fed them: steering acts at generated tokens, so the EBMs learn
there as well (`training_rows`), each state carrying its response's label. Everything is cached in
the work directory; a rerun with the same inputs reuses it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Optional, Sequence

import numpy as np

from eds_jax.datasets.prompt_files import load_prompts

from eds_jax.common.files import read_jsonl, write_jsonl
from eds_jax.core.decoding import (bucket_length, chat_batches, check_generated_states, generate_text,
                                   pad_to_bucket)

BENIGN, HARMFUL = "benign", "harmful"


class LabelError(ValueError):
    """The labelled data cannot train an EBM (no positives or no negatives)."""


@dataclasses.dataclass
class Collection:
    prompts: list[str]
    kinds: list[str]  # "benign" | "harmful"
    responses: list[str]
    refused: np.ndarray  # bool [N]
    labels: np.ndarray  # int8 [N]: 1 good, 0 bad
    activations: np.ndarray  # float32 [N, L, D]: input of block l at the last prompt token
    # float32 [N, K, L, D]: input of block l at each of the first K response tokens (K = 0: none);
    # real where `generated_valid` [N, K] (the response is at least that long, EOS excluded)
    generated: Optional[np.ndarray] = None
    generated_valid: Optional[np.ndarray] = None

    def counts(self) -> dict[str, int]:
        kinds = np.asarray(self.kinds)
        return {f"{kind}_{'refused' if r else 'complied'}": int(np.sum((kinds == kind) & (self.refused == r)))
                for kind in (BENIGN, HARMFUL) for r in (False, True)} | {
            "good": int(self.labels.sum()), "bad": int((1 - self.labels).sum())}


def label(kind: str, refused: bool) -> int:
    if kind == BENIGN:
        return 0 if refused else 1
    if kind == HARMFUL:
        return 1 if refused else 0
    raise ValueError(f"prompt kind {kind!r} is neither {BENIGN!r} nor {HARMFUL!r}")


def read_sources(sources, seed: int) -> list[str]:
    """Prompts from each source ({path, field, limit}), given as a list or a {name: source} mapping.

    `limit` > 0 samples that many with `seed`; a source with an empty path is skipped.
    """
    return read_named_sources(sources, seed)[0]


def read_named_sources(sources, seed: int) -> tuple[list[str], list[str]]:
    """(prompts, the name of each prompt's source) from a {name: source} mapping (a list: names
    are the positions), as `read_sources` reads them."""
    named = sources.items() if hasattr(sources, "items") else enumerate(sources)
    prompts, names = [], []
    for name, source in named:
        if not source["path"]:
            continue
        rows = load_prompts(source["path"], source.get("field") or None)
        limit = int(source.get("limit") or 0)
        if 0 < limit < len(rows):
            picked = np.random.RandomState(seed).choice(len(rows), limit, replace=False)
            rows = [rows[i] for i in sorted(picked)]
        prompts += rows
        names += [str(name)] * len(rows)
    return prompts, names


def last_token_activations(pre, prompts: Sequence[str], system: Optional[str], batch_size: int,
                           progress: bool = True, batch_sharding=None,
                           reuse_prefix: bool = True, by_length: bool = True) -> np.ndarray:
    """[N, L, D] float32: the input of every block at the last prompt token, one forward per batch.

    With `batch_sharding`, each batch's rows are split over the mesh's data axis (and processes).
    `reuse_prefix`: a prompt prefix shared by a batch (the system turn) runs once, not per row.
    `by_length`: prompts of similar token counts share a batch (less padding); rows come back in
    prompt order either way.
    """
    import jax.numpy as jnp
    import models
    from models.sharding import gather_rows, pad_rows, shard_rows
    activations = np.zeros((len(prompts), pre.config.num_layers, pre.config.hidden_size), np.float32)
    for index, (rows, ids, mask) in enumerate(chat_batches(pre, prompts, system, batch_size,
                                                           "activations", progress, by_length)):
        count = ids.shape[0]
        if index > 0:  # a short last batch reuses the full batches' compile
            ids, mask = pad_rows((ids, mask), batch_size)
        split = models.split_shared_prefix(ids, mask) if reuse_prefix else None
        prefix = None
        if split is not None:
            prefix_ids, ids, mask = split
            prefix = models.prefill_prefix(pre, prefix_ids)
        # one compile per length bucket
        ids, mask = pad_to_bucket(ids, mask, pre.pad_token_id, bucket_length(ids.shape[1]))
        if batch_sharding is not None:
            ids, mask = shard_rows((ids, mask), batch_sharding)
        out = models.forward(pre, ids, mask, output_hidden_states=True, output_logits=False,
                             prefix=prefix)
        last = jnp.stack([h[:, -1] for h in out.hidden_states[:pre.config.num_layers]], axis=1)
        activations[rows] = np.asarray(gather_rows(last.astype(jnp.float32)))[:count]
    return activations


def _fingerprint(pre, prompts, kinds, collect_config) -> str:
    fields = {"model": pre.source, "dtype": pre.dtype, "prompts": prompts, "kinds": kinds,
              "max_new_tokens": collect_config["max_new_tokens"],
              "system": collect_config["system"], "judge": collect_config["judge"]}
    # a collection with generated states is its own: its decode hands back the states (K = 0
    # keeps the keys of collections made before the option existed)
    if collect_config.get("generated_states"):
        fields["generated_states"] = int(collect_config["generated_states"])
    payload = json.dumps(fields)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def collect(pre, benign: Sequence[str], harmful: Sequence[str], directory: str, collect_config,
            judge: Callable[[str], bool], batch_sharding=None) -> Collection:
    """Generate, judge, label and extract, or reuse what `directory` already holds for these inputs.

    `collect_config["generated_states"]` (K, default 0): also keep the states of each response's
    first K tokens, taken inside the decode loop (a collection of its own: K is in the cache key).

    `batch_sharding` splits each batch's rows over the mesh's data axis: on a multi-host run every
    process reads the same prompts but places and computes only its share of each batch.
    """
    if not benign and not harmful:
        raise LabelError("no prompts: both the benign and the harmful sources are empty")
    prompts = list(benign) + list(harmful)
    kinds = [BENIGN] * len(benign) + [HARMFUL] * len(harmful)
    os.makedirs(directory, exist_ok=True)
    key = _fingerprint(pre, prompts, kinds, collect_config)
    responses_path = os.path.join(directory, f"responses-{key}.jsonl")
    activations_path = os.path.join(directory, f"activations-{key}.npz")
    system = collect_config["system"]
    batch_size = int(collect_config["batch_size"])
    max_new_tokens = int(collect_config["max_new_tokens"])
    n_states = int(collect_config.get("generated_states") or 0)
    check_generated_states(n_states, max_new_tokens, "collect.generated_states")
    generated_path = os.path.join(directory, f"generated-{key}.npz")

    cached = os.path.isfile(responses_path)
    activations, generated, generated_valid = None, None, None
    if os.path.isfile(activations_path):
        activations = np.load(activations_path)["activations"]
    if n_states and os.path.isfile(generated_path):
        with np.load(generated_path) as f:
            generated, generated_valid = f["states"], f["valid"]
    need_generated = bool(n_states) and generated is None
    if cached and not need_generated:
        responses = [row["response"] for row in read_jsonl(responses_path)]
    else:  # the decode hands back the activations (and generated states): no second forward pass
        cached = False
        responses, outputs = generate_text(
            pre, prompts, system=system, max_new_tokens=max_new_tokens,
            batch_size=batch_size, progress=True, batch_sharding=batch_sharding,
            return_outputs=True, return_prompt_states=activations is None, return_generated_states=n_states)
        if activations is None:
            activations = np.asarray(outputs.prompt_states, np.float32)
        if n_states:
            generated = np.asarray(outputs.generated_states, np.float32)
            generated_valid = np.asarray(outputs.generated_valid, bool)
    refused = np.array([judge(r) for r in responses], bool)
    labels = np.array([label(k, r) for k, r in zip(kinds, refused)], np.int8)
    if not cached:
        write_jsonl(responses_path, ({"prompt": p, "kind": k, "response": r, "refused": bool(x),
                                      "label": int(y)}
                                     for p, k, r, x, y in zip(prompts, kinds, responses, refused, labels)))

    if not os.path.isfile(activations_path):
        if activations is None:  # responses cached without their activations
            activations = last_token_activations(pre, prompts, system, batch_size,
                                                 batch_sharding=batch_sharding)
        tmp = f"{activations_path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, activations=activations, labels=labels)
        os.replace(tmp, activations_path)
    if need_generated:
        tmp = f"{generated_path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, states=generated, valid=generated_valid)
        os.replace(tmp, generated_path)
    return Collection(prompts, kinds, responses, refused, labels, activations, generated,
                      generated_valid)


def training_rows(collection: Collection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states [M, L, D], labels [M], groups [M] or None): every prompt's last-token state, then
    each real generated-token state with its response's label; `groups` names each row's prompt,
    so a validation split by group keeps a prompt's states on one side (None: one row a prompt)."""
    if collection.generated is None:
        return collection.activations, collection.labels, None
    prompt, position = np.nonzero(collection.generated_valid)
    return (np.concatenate([collection.activations, collection.generated[prompt, position]]),
            np.concatenate([collection.labels, collection.labels[prompt]]),
            np.concatenate([np.arange(len(collection.labels)), prompt]))


def check_labels(collection: Collection) -> None:
    """Both classes are needed for InfoNCE; say which is missing and what to change."""
    counts = collection.counts()
    if counts["good"] == 0:
        raise LabelError(f"no positives (good states) after labelling: {counts}. The model complied "
                         "with every harmful prompt and refused every benign one; add benign prompts "
                         "it answers, or check the judge.")
    if counts["bad"] == 0:
        raise LabelError(f"no negatives (bad states) after labelling: {counts}. The model refused no "
                         "benign prompt and complied with no harmful one; add seemingly toxic benign "
                         "prompts (OR-Bench-Hard, XSTest-safe) or harmful ones it answers, or raise "
                         "collect.max_new_tokens so refusals are seen.")

