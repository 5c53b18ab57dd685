"""The one decode loop: prefill, then a jitted `lax.while_loop` over new tokens, with optional steering.

Plain and steered generation share this loop; steering is only the intervention handed to the
forward pass: EDS (`Steering`) or a steering-vector baseline (`vectors.VectorSteering`).
Shapes are static: prompts are left-padded to a length bucket, the KV cache holds
bucket + max_new_tokens slots per row (plus one copy of a prefix all rows share: see
`models.prefix_cache`), rows that reached EOS keep running with frozen positions and emit the pad
id, and the loop stops early once every row has ended.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from models.prefix_cache import SharedPrefix, bucket_length, pad_to_bucket, split_shared_prefix
from models.pretrained import (Pretrained, apply_model, prefill_prefix, prefix_intervention,
                               prompt_positions, resolve_dtype)
from models.sharding import gather_rows, pad_rows, shard_rows
from models.transformer import init_kv_cache
from eds_jax.core.gate import prompt_states
from eds_jax.core.steering import Steering
from eds_jax.core.vectors import VectorSteering

SteeringLike = Union[Steering, VectorSteering]  # anything with layers, check_model, at_call, __call__



class GenerationOutput(NamedTuple):
    tokens: jax.Array  # int32 [B, max_new_tokens]; pad id after EOS
    lengths: jax.Array  # int32 [B]; new tokens up to and including the first EOS
    energies: Optional[jax.Array]  # float32 [B, max_new_tokens, n_layers] before steering; NaN after EOS
    energies_after: Optional[jax.Array] = None  # after the steps, if steering.record_energy_after
    opened: Optional[np.ndarray] = None  # bool [B]: the rows a prompt gate let steer (gated steering)
    # float32 [B, L, D]: the input of every block at the last prompt token, as the prefill saw it
    # (return_prompt_states); collection reads its activations here instead of a second forward
    prompt_states: Optional[jax.Array] = None
    # float32 [B, K, L, D]: the input of every block at each of the first K new tokens
    # (return_generated_states=K), as the decode loop fed them; meaningful where
    # `generated_valid`: the token was emitted, and is not an end-of-sequence token
    generated_states: Optional[jax.Array] = None
    generated_valid: Optional[jax.Array] = None  # bool [B, K]


class _DecodeState(NamedTuple):
    kv_cache: tuple
    kv_mask: jax.Array  # [B, S] real tokens written so far
    token: jax.Array  # [B] last emitted token
    position: jax.Array  # [B] RoPE position of `token`
    done: jax.Array  # [B] EOS already emitted


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """int32 (ids, mask) [N, longest]: token lists left-padded to the longest one."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, np.int32)
    mask = np.zeros((len(sequences), width), np.int32)
    for i, sequence in enumerate(sequences):
        if len(sequence):
            ids[i, width - len(sequence):] = sequence
            mask[i, width - len(sequence):] = 1
    return ids, mask


def length_batches(lengths: Sequence[int], batch_size: int, by_length: bool = True,
                   groups: Optional[Sequence[int]] = None) -> list[np.ndarray]:
    """Batches of indices into `lengths`. by_length: in order of length (stable), so each batch
    holds items of similar length and pads little; otherwise in the given order. groups: a key
    per item; items of one group come together (then by length), so most batches hold one group."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths) if by_length else np.zeros(len(lengths), int)
    keys = (lengths,) if groups is None else (lengths, np.asarray(groups))
    order = np.lexsort(keys) if len(lengths) else np.arange(0)
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def chat_batches(pre: Pretrained, prompts: Sequence[str], system: Optional[str], batch_size: int,
                 desc: str, progress: bool, by_length: bool = True, groups=None):
    """Chat-templated, left-padded token batches of `prompts`: yields (rows, ids, mask), numpy
    arrays, `rows` the indices of the batch's prompts. by_length: prompts of similar token counts
    share a batch (see `length_batches`); callers put results back in place with `rows`."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, got one string")
    texts = chat_prompts(pre.tokenizer, prompts, system)
    encoded = pre.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    batches = length_batches([len(e) for e in encoded], batch_size, by_length, groups)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc=desc, unit="batch")
    for rows in batches:
        yield (rows,) + left_pad([encoded[i] for i in rows], pre.pad_token_id)


def _choose(logits, key, temperature, top_p, sample: bool):
    if not sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    probs = jax.nn.softmax(logits, axis=-1)
    sorted_probs = jnp.sort(probs, axis=-1)[:, ::-1]
    cumulative = jnp.cumsum(sorted_probs, axis=-1)
    # smallest set whose mass reaches top_p: keep a token if the mass before it is < top_p
    cutoff_index = jnp.sum(cumulative - sorted_probs < top_p, axis=-1, keepdims=True) - 1
    cutoff = jnp.take_along_axis(sorted_probs, cutoff_index, axis=-1)
    logits = jnp.where(probs >= cutoff, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _energies(aux) -> Optional[jax.Array]:
    """[B, n_layers, 2] (before, after) from EDS; None for interventions that report nothing."""
    return jnp.stack(aux, axis=-2) if aux and aux[0] is not None else None


class _Buffers(NamedTuple):
    """Per-step outputs, written in place as the loop runs; untouched steps keep their fill."""
    tokens: jax.Array  # int32 [B, N], pad id
    done_before: jax.Array  # bool [B, N], True: the row had ended before this step
    energies: Optional[jax.Array]  # float32 [B, N, n_layers, 2], NaN
    # float32 [B, K + 1, L, D]: block inputs of new tokens 0..K-1; slot K takes later steps' writes
    states: Optional[jax.Array] = None


@functools.partial(jax.jit, static_argnames=("config", "dtype", "max_new_tokens", "eos_ids",
                                             "pad_id", "sample", "prompt_states", "generated_states"))
def _generate(params, input_ids, attention_mask, steering: Optional[SteeringLike], rng, temperature,
              top_p, prefix: Optional[SharedPrefix] = None, *, config, dtype, max_new_tokens: int,
              eos_ids: tuple, pad_id: int, sample: bool, prompt_states: bool = False,
              generated_states: int = 0) -> GenerationOutput:
    batch, prompt_len = input_ids.shape
    # each row's cache: [prompt | new tokens], after the shared prefix if there is one
    cache = init_kv_cache(config, batch, prompt_len + max_new_tokens, resolve_dtype(dtype))
    kv_mask = jnp.zeros((batch, prompt_len + max_new_tokens), bool).at[:, :prompt_len].set(
        attention_mask.astype(bool))
    eos = jnp.asarray(eos_ids, jnp.int32)

    def call_model(ids, positions, cache, index, mask, call_index, hidden_states=False):
        intervention = steering.at_call(call_index) if steering is not None else None
        return apply_model(config, dtype, params, ids, positions, cache, index, mask,
                           intervention=intervention, output_hidden_states=hidden_states,
                           last_logits_only=True, prefix=prefix)

    positions = prompt_positions(attention_mask) + (0 if prefix is None else prefix.length)
    out = call_model(input_ids, positions, cache, 0, kv_mask, 0, hidden_states=prompt_states)
    states = None
    if prompt_states:  # only the last column is kept, so XLA computes no other position's copy
        states = jnp.stack([h[:, -1] for h in out.hidden_states[:config.num_layers]],
                           axis=1).astype(jnp.float32)
    first = _choose(out.logits[:, -1], jax.random.fold_in(rng, 0), temperature, top_p, sample)
    state = _DecodeState(out.kv_cache, kv_mask, first, positions[:, -1] + 1, jnp.isin(first, eos))
    first_energy = _energies(out.intervention_aux)
    buffers = _Buffers(
        tokens=jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first),
        done_before=jnp.ones((batch, max_new_tokens), bool).at[:, 0].set(False),
        energies=None if first_energy is None else jnp.full(
            (batch, max_new_tokens) + first_energy.shape[1:], jnp.nan, jnp.float32
        ).at[:, 0].set(first_energy),
        states=None if not generated_states else jnp.zeros(
            (batch, generated_states + 1, config.num_layers, config.hidden_size), jnp.float32))

    def step(carry):
        t, state, buffers = carry
        slot = prompt_len + t - 1  # where the previous token's keys go
        kv_mask = state.kv_mask.at[:, slot].set(~state.done)
        out = call_model(state.token[:, None], state.position[:, None], state.kv_cache, slot,
                         kv_mask, t, hidden_states=bool(generated_states))
        token = _choose(out.logits[:, -1], jax.random.fold_in(rng, t), temperature, top_p, sample)
        token = jnp.where(state.done, pad_id, token)
        energy = _energies(out.intervention_aux)
        states = buffers.states
        if generated_states:  # this step fed new token t - 1; steps past K write the spare slot
            fed = jnp.stack([h[:, 0] for h in out.hidden_states[:config.num_layers]], axis=1)
            states = states.at[:, jnp.minimum(t - 1, generated_states)].set(fed.astype(jnp.float32))
        buffers = _Buffers(
            buffers.tokens.at[:, t].set(token), buffers.done_before.at[:, t].set(state.done),
            None if energy is None else buffers.energies.at[:, t].set(
                jnp.where(state.done[:, None, None], jnp.nan, energy)), states)
        new_state = _DecodeState(out.kv_cache, kv_mask, token,
                                 jnp.where(state.done, state.position, state.position + 1),
                                 state.done | jnp.isin(token, eos))
        return t + 1, new_state, buffers

    # early exit: stop once every row has emitted EOS; the steps not run keep their fill (pad id,
    # "ended", NaN), which is what they would have produced
    keep_going = lambda carry: (carry[0] < max_new_tokens) & ~jnp.all(carry[1].done)
    _, _, buffers = jax.lax.while_loop(keep_going, step, (jnp.int32(1), state, buffers))
    lengths = jnp.sum(~buffers.done_before, axis=-1).astype(jnp.int32)
    extra = {"prompt_states": states}
    if generated_states:
        fed = buffers.tokens[:, :generated_states]
        extra.update(generated_states=buffers.states[:, :generated_states],
                     generated_valid=(jnp.arange(generated_states) < lengths[:, None])
                     & ~jnp.isin(fed, eos))
    if buffers.energies is None:
        return GenerationOutput(buffers.tokens, lengths, None, None, **extra)
    after = buffers.energies[..., 1] if steering.record_energy_after else None
    return GenerationOutput(buffers.tokens, lengths, buffers.energies[..., 0], after, **extra)


def check_generated_states(count, max_new_tokens: int, what: str = "return_generated_states") -> None:
    """A count of generated tokens whose states the decode loop can hand back: the last new token
    is emitted but never fed, so at most max_new_tokens - 1."""
    if isinstance(count, bool) or int(count) != count or not 0 <= count < int(max_new_tokens):
        raise ValueError(f"{what}={count!r}: expected a whole number in [0, max_new_tokens="
                         f"{max_new_tokens})")


def _check_left_padded(mask: np.ndarray) -> None:
    if not mask.any(axis=1).all():
        rows = np.flatnonzero(~mask.any(axis=1)).tolist()
        raise ValueError(f"attention_mask rows {rows} have no real tokens")
    # left padding: once a row turns real it stays real
    right_padded = np.flatnonzero((np.diff(mask.astype(np.int8), axis=1) < 0).any(axis=1))
    if right_padded.size:
        raise ValueError(f"attention_mask rows {right_padded.tolist()} are not left-padded; "
                         "set tokenizer.padding_side = 'left'")


def steered_generate(pre: Pretrained, input_ids, attention_mask=None,
                     steering: Optional[SteeringLike] = None, max_new_tokens: int = 64,
                     temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                     max_cache_length: Optional[int] = None, batch_sharding=None,
                     reuse_prefix: bool = True, return_prompt_states: bool = False,
                     return_generated_states: int = 0) -> GenerationOutput:
    """Generate `max_new_tokens` tokens for a left-padded batch, steering when `steering` is set.

    temperature 0 is greedy; otherwise temperature/top-p sampling with a fresh key per step.
    The cache holds at most `max_cache_length` tokens (default: the model's max positions).
    `batch_sharding` (e.g. `models.sharding.batch_sharding(mesh)`) splits the rows over the mesh's
    data axis: every process passes the same whole batch, places only its own rows, and gets the
    whole output back.
    `reuse_prefix`: when the rows share a prompt prefix (a system prompt), its keys and values are
    computed once and only each row's suffix is prefilled; the tokens are those of a full prefill.
    `return_prompt_states`: also return the input of every block at the last prompt token
    (`GenerationOutput.prompt_states`), taken from the prefill (after any steering there).
    `return_generated_states=K`: also return the input of every block at each of the first K new
    tokens, as the loop fed them (after any steering there), and which of them are real tokens
    (`generated_states`, `generated_valid`); K < max_new_tokens, since the last new token is
    never fed back.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be an integer [batch, length] array, got {ids.dtype} "
                         f"{ids.shape}")
    mask = np.ones_like(ids, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    if int(max_new_tokens) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    check_generated_states(return_generated_states, max_new_tokens)
    if not np.isfinite(temperature) or temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need a finite temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    real = ids[mask]
    if real.size and (real.min() < 0 or real.max() >= pre.config.vocab_size):
        raise ValueError(f"input_ids hold token ids in [{real.min()}, {real.max()}]; the model's "
                         f"vocabulary is [0, {pre.config.vocab_size - 1}]")
    _check_left_padded(mask)
    config = pre.config
    capacity = int(max_cache_length or config.max_position_embeddings)
    real_len = int(mask.sum(axis=1).max())
    if ids.shape[1] + max_new_tokens > capacity:
        mask, ids = mask[:, -real_len:], ids[:, -real_len:]  # drop padding-only columns
    if real_len + max_new_tokens > capacity:
        raise ValueError(f"prompt of {real_len} tokens + max_new_tokens={max_new_tokens} does not fit "
                         f"the KV cache of {capacity} tokens")
    if steering is not None:
        steering.check_model(config)
        per_row = steering.batch_rows
        if per_row is not None and per_row != ids.shape[0]:
            raise ValueError(f"steering has per-row settings for {per_row} rows, but the batch has "
                             f"{ids.shape[0]}")
    prefix_ids, prefix = None, None
    reusable, _ = prefix_intervention(steering)
    split = split_shared_prefix(ids, mask) if reuse_prefix and reusable else None
    if split is not None and (bucket_length(len(split[0])) + bucket_length(split[1].shape[1])
                              + max_new_tokens <= capacity):
        prefix_ids, ids, mask = split
    slots = 0 if prefix_ids is None else bucket_length(len(prefix_ids))
    ids, mask = pad_to_bucket(ids, mask, pre.pad_token_id,
                              min(bucket_length(ids.shape[1]), capacity - max_new_tokens - slots))
    rows = ids.shape[0]
    opened, plain_prefix = None, None
    if getattr(steering, "gate", None) is not None:  # read once, on the unsteered prompt
        gate = steering.gate
        plain_prefix = None if prefix_ids is None else prefill_prefix(pre, prefix_ids)
        opened = gate.opens(prompt_states(pre, ids, mask, gate.layer, plain_prefix))
        steering = steering.open_rows(opened)
    if batch_sharding is not None:
        ids, mask = shard_rows((ids, mask), batch_sharding)
        if steering is not None and ids.shape[0] > rows:  # padded rows repeat the last row's settings
            steering = steering.take_rows(np.minimum(np.arange(ids.shape[0]), rows - 1))
    if prefix_ids is not None:
        _, over_prefix = prefix_intervention(steering)  # of the rows as sharded
        per_row = over_prefix is not None and over_prefix.batch_rows is not None
        if over_prefix is None and plain_prefix is not None:  # the gate's plain prefix is this one
            prefix = plain_prefix
        else:
            prefix = prefill_prefix(pre, prefix_ids, over_prefix, rows=ids.shape[0] if per_row else 1)
    out = _generate(pre.params, ids, mask, steering, jax.random.PRNGKey(seed),
                    jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), prefix, config=config,
                    dtype=pre.dtype, max_new_tokens=int(max_new_tokens),
                    eos_ids=pre.eos_token_ids, pad_id=pre.pad_token_id, sample=temperature > 0,
                    prompt_states=bool(return_prompt_states),
                    generated_states=int(return_generated_states))
    if batch_sharding is not None:
        out = jax.tree_util.tree_map(lambda a: a[:rows], gather_rows(out))
    return out if opened is None else out._replace(opened=opened)


def chat_prompts(tokenizer, prompts: Sequence[str], system: Optional[str] = None) -> list[str]:
    """Apply the tokenizer's chat template (with the assistant turn opened) to each prompt."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("the model's tokenizer has no chat template; pass token ids to "
                         "steered_generate instead")
    texts = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system}] if system is not None else [])
        messages.append({"role": "user", "content": prompt})
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=True))
    return texts


def check_prompts_fit(tokenizer, config, prompts: Sequence[str], system: Optional[str],
                      max_new_tokens: int, what: str = "prompt") -> None:
    """Raise, naming the longest prompt, when a chat-templated prompt + `max_new_tokens` exceeds
    the model's positions: checked from the tokenizer and config, before the weights load."""
    if tokenizer is None or not prompts:
        return
    lengths = [len(ids) for ids in tokenizer(chat_prompts(tokenizer, list(prompts), system),
                                             add_special_tokens=False)["input_ids"]]
    longest = int(np.argmax(lengths))
    if lengths[longest] + max_new_tokens > config.max_position_embeddings:
        raise ValueError(f"{what} {longest} ({prompts[longest][:50]!r}) is {lengths[longest]} tokens with "
                         f"the chat template; + max_new_tokens={max_new_tokens} does not fit the model's "
                         f"{config.max_position_embeddings} positions")


def generate_text(pre: Pretrained, prompts: Sequence[str], steering: Optional[SteeringLike] = None,
                  system: Optional[str] = None, max_new_tokens: int = 64, batch_size: int = 16,
                  temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                  return_outputs: bool = False, progress: bool = False, batch_sharding=None,
                  reuse_prefix: bool = True, by_length: bool = True,
                  return_prompt_states: bool = False, return_generated_states: int = 0):
    """Chat-template, left-pad and batch `prompts`; return the decoded new text of each.

    With return_outputs=True, also return one `GenerationOutput` whose rows follow `prompts`.
    `batch_sharding` (see `steered_generate`) splits each batch's rows over devices and processes.
    A steering with per-row settings (e.g. `Steering(eta=array)`) holds one setting per prompt.
    `reuse_prefix`: see `steered_generate` (a system prompt is prefilled once per batch, not once
    per row). `by_length`: prompts of similar token counts share a batch, so less of each batch is
    padding; greedy texts are those of batches in the given order. `return_prompt_states`: the
    outputs carry each prompt's block inputs at its last token, and `return_generated_states=K`
    at its first K new tokens (see `steered_generate`).
    """
    per_row = steering.batch_rows if steering is not None else None
    if per_row is not None and per_row != len(prompts):
        raise ValueError(f"steering has per-row settings for {per_row} rows, but {len(prompts)} "
                         "prompts were given")
    groups = None
    if per_row is not None and prefix_intervention(steering)[1] is not None:
        # an intervention that shapes the system prompt's keys: rows of one setting share a batch,
        # so its prefix is prefilled once per batch, not once per row
        groups = steering.row_groups()
    responses, outputs, order = [None] * len(prompts), [], []
    batches = chat_batches(pre, prompts, system, batch_size, "generate", progress, by_length, groups)
    for index, (rows, ids, mask) in enumerate(batches):
        count = ids.shape[0]
        if index > 0:  # a short last batch reuses the full batches' compile
            ids, mask = pad_rows((ids, mask), batch_size)
        # this batch's prompts, the last one repeated like the padded rows
        batch_steering = steering
        if per_row is not None:
            batch_steering = steering.take_rows(rows[np.minimum(np.arange(ids.shape[0]), count - 1)])
        out = steered_generate(pre, ids, mask, steering=batch_steering, max_new_tokens=max_new_tokens,
                               temperature=temperature, top_p=top_p, seed=seed + index * batch_size,
                               batch_sharding=batch_sharding, reuse_prefix=reuse_prefix,
                               return_prompt_states=return_prompt_states,
                               return_generated_states=return_generated_states)
        out = jax.tree_util.tree_map(lambda a: a[:count], out)
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        for i, row, n in zip(rows, tokens, lengths):
            responses[i] = pre.tokenizer.decode(row[:n], skip_special_tokens=True)
        outputs.append(out)
        order.append(rows)
    if not return_outputs:
        return responses
    if not outputs:
        return responses, None
    # rows back in prompt order
    inverse = np.argsort(np.concatenate(order))
    merged = jax.tree_util.tree_map(lambda *parts: np.concatenate([np.asarray(p) for p in parts])[inverse],
                                    *outputs)
    return responses, merged
