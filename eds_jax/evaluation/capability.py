"""General capability kept under steering: zero-shot multiple-choice MMLU, steered vs plain.

Each question is asked through the chat template (under the deployment's system prompt) with its
four options and "Answer with the letter"; the answer is read at the first generated position, as
decoding would see it: an intervention steps the last prompt token's state during the prefill
(`models.last_token_logits(..., intervention=...)`; EDS moves only that newest position), then the four
letters' log-probabilities are compared. A 135M model is near chance on MMLU, so beside accuracy
the mean log-probability of the correct letter (normalised over A-D) is reported: it moves with
damage even where accuracy cannot.

Files are MMLU's own CSV layout: no header; question, A, B, C, D, answer letter; one file per
subject named SUBJECT_test.csv (a folder of them, or one file).
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Optional, Sequence

import numpy as np

LETTERS = ("A", "B", "C", "D")


@dataclasses.dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # index into LETTERS


def _subject(path: str) -> str:
    name = os.path.splitext(os.path.basename(path))[0]
    return name[:-len("_test")] if name.endswith("_test") else name


def read_mmlu(path: str, per_subject: Optional[int] = None, seed: int = 0) -> list[Question]:
    """Questions from an MMLU CSV file or a folder of SUBJECT_test.csv files (a `data:` path
    allowed). per_subject: a seeded sample of that many per subject (stratified), else all."""
    from eds_jax.datasets.prompt_files import PromptFileError, resolve
    path = resolve(path)
    files = (sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".csv"))
             if os.path.isdir(path) else [path])
    if not files or not all(os.path.isfile(f) for f in files):
        raise PromptFileError(f"MMLU source {path!r}: expected a CSV file or a folder of SUBJECT_test.csv")
    questions = []
    for file in files:
        rows = []
        with open(file, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), 1):
                if len(row) != 6 or row[5].strip() not in LETTERS or not row[0].strip():
                    raise PromptFileError(f"{file}, row {number}: expected question, A, B, C, D and an "
                                          f"answer letter A-D, got {len(row)} cells ending {row[-1:]!r}")
                rows.append(Question(_subject(file), row[0], tuple(row[1:5]), LETTERS.index(row[5].strip())))
        if per_subject and per_subject < len(rows):
            picked = np.random.RandomState(seed).choice(len(rows), per_subject, replace=False)
            rows = [rows[i] for i in sorted(picked)]
        questions += rows
    return questions


def question_prompt(q: Question) -> str:
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    subject = q.subject.replace("_", " ")
    return (f"The following is a multiple choice question about {subject}.\n\n{q.question}\n{options}\n"
            "Answer with the letter of the correct option.")


def letter_token_ids(tokenizer) -> list[int]:
    """The token of each letter as an answer starts with it (no leading space after the template)."""
    ids = []
    for letter in LETTERS:
        encoded = tokenizer.encode(letter, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"letter {letter!r} is {len(encoded)} tokens for this tokenizer; expected one")
        ids.append(encoded[0])
    return ids


def letter_logprobs(pre, questions: Sequence[Question], intervention=None, system: Optional[str] = None,
                    batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """[N, 4] log-probabilities of A-D (normalised over the four) at the first generated position."""
    import jax
    import models
    from eds_jax.core.decoding import bucket_length, chat_batches, pad_to_bucket
    letters = np.asarray(letter_token_ids(pre.tokenizer))
    out = np.zeros((len(questions), len(LETTERS)), np.float32)
    prompts = [question_prompt(q) for q in questions]
    for rows, ids, mask in chat_batches(pre, prompts, system, batch_size, "mmlu", progress, True):
        ids, mask = pad_to_bucket(ids, mask, pre.pad_token_id, bucket_length(ids.shape[1]))
        logits = models.last_token_logits(pre, ids, mask, intervention=intervention)
        picked = np.asarray(logits)[:, letters]
        out[rows] = np.asarray(jax.nn.log_softmax(picked, axis=-1))
    return out


def capability_report(questions: Sequence[Question], logprobs: dict, reference: str = "baseline",
                      num_boot: int = 2000, seed: int = 0) -> dict:
    """{method: accuracy with interval, paired delta of accuracy and of the correct letter's
    log-probability against `reference`, share of answers changed}, from {method: [N, 4]}."""
    from eds_jax.evaluation.metrics import paired_delta, paired_mean_delta, rate_interval
    answer = np.asarray([q.answer for q in questions])
    base = np.asarray(logprobs[reference])
    report = {"n": len(questions), "subjects": len({q.subject for q in questions}), "methods": {}}
    for method, lp in logprobs.items():
        lp = np.asarray(lp)
        correct = lp.argmax(-1) == answer
        entry = {"accuracy": rate_interval(correct, num_boot, seed),
                 "correct_logprob": float(lp[np.arange(len(answer)), answer].mean())}
        if method != reference:
            entry["delta_accuracy"] = paired_delta(correct, base.argmax(-1) == answer, num_boot, seed)
            entry["delta_correct_logprob"] = paired_mean_delta(
                lp[np.arange(len(answer)), answer], base[np.arange(len(answer)), answer], num_boot, seed)
            entry["changed"] = int((lp.argmax(-1) != base.argmax(-1)).sum())
        report["methods"][method] = entry
    return report


def markdown_table(report: dict) -> str:
    lines = [f"MMLU, zero-shot, {report['n']} questions over {report['subjects']} subjects",
             "", "| method | accuracy [95% CI] | Δ accuracy [95% CI] | log p(correct) | Δ log p [95% CI] | answers changed |",
             "|---|---|---|---|---|---|"]
    for method, e in report["methods"].items():
        a = e["accuracy"]
        acc = f"{a['rate']:.1%} [{a['low']:.1%}, {a['high']:.1%}] ({a['count']}/{a['n']})"
        if "delta_accuracy" in e:
            d, g = e["delta_accuracy"], e["delta_correct_logprob"]
            lines.append(f"| {method} | {acc} | {100 * d['delta']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] | "
                         f"{e['correct_logprob']:.3f} | {g['delta']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}] | "
                         f"{e['changed']}/{a['n']} |")
        else:
            lines.append(f"| {method} | {acc} | (reference) | {e['correct_logprob']:.3f} | (reference) | |")
    return "\n".join(lines)
