"""The MMLU capability check: the reader, the letter log-probabilities under an intervention, the
report's paired figures."""
import jax
import numpy as np
import pytest

import eds_jax
from eds_jax import EBM, EBMSpec
from eds_jax.datasets.prompt_files import PromptFileError
from eds_jax.evaluation import capability

ROWS = ('"Find the degree of Q(sqrt(2), sqrt(3)) over Q.",0,4,2,6,B\n'
        'Which is a prime?,4,6,7,9,C\n'
        'Pick the pair.,"True, True","False, False",x,y,A\n')


def test_reader_on_mmlu_rows_with_quoted_commas(tmp_path):
    path = tmp_path / "abstract_algebra_test.csv"
    path.write_text(ROWS)
    questions = capability.read_mmlu(str(path))
    assert [q.answer for q in questions] == [1, 2, 0]
    assert questions[0].question == "Find the degree of Q(sqrt(2), sqrt(3)) over Q."
    assert questions[2].choices == ("True, True", "False, False", "x", "y")
    assert {q.subject for q in questions} == {"abstract_algebra"}
    assert "about abstract algebra" in capability.question_prompt(questions[0])
    sampled = capability.read_mmlu(str(path), per_subject=2, seed=0)
    assert len(sampled) == 2 and all(q in questions for q in sampled)
    bad = tmp_path / "bad_test.csv"
    bad.write_text("A question,1,2,3,4,E\n")
    with pytest.raises(PromptFileError, match="bad_test.csv, row 1: expected question, A, B, C, D"):
        capability.read_mmlu(str(bad))


def test_the_shipped_subset_is_ten_per_subject():
    questions = capability.read_mmlu("data:public/mmlu")
    assert len(questions) == 570 and len({q.subject for q in questions}) == 57


def test_letter_logprobs_batched_and_under_zero_steering(smollm2):
    questions = capability.read_mmlu("data:public/mmlu")[:5]
    plain = capability.letter_logprobs(smollm2, questions, batch_size=4)
    assert plain.shape == (5, 4)
    np.testing.assert_allclose(np.exp(plain).sum(-1), 1.0, rtol=1e-5)
    one_by_one = np.concatenate([capability.letter_logprobs(smollm2, [q], batch_size=1) for q in questions[:2]])
    np.testing.assert_allclose(one_by_one, plain[:2], atol=1e-4)
    ebms = {10: EBM.init(EBMSpec.simple(576, 16), jax.random.PRNGKey(0))}
    still = capability.letter_logprobs(smollm2, questions, eds_jax.Steering(ebms, eta=0.0), batch_size=4)
    np.testing.assert_allclose(still, plain, atol=1e-5)
    moved = capability.letter_logprobs(smollm2, questions, eds_jax.Steering(ebms, eta=400.0), batch_size=4)
    assert not np.allclose(moved, plain, atol=1e-3)  # the step at the last prompt token reaches the answer


def test_capability_report_on_hand_made_logprobs():
    qs = [capability.Question("s", "q", ("a", "b", "c", "d"), answer) for answer in (0, 1, 2, 3)]
    base = np.log(np.full((4, 4), 0.1))
    base[np.arange(4), [0, 1, 2, 0]] = np.log(0.7)  # 3 of 4 right
    steered = base.copy()
    steered[3] = np.log([0.1, 0.1, 0.1, 0.7])  # the fourth becomes right
    report = capability.capability_report(qs, {"baseline": base, "eds": steered}, num_boot=200)
    eds = report["methods"]["eds"]
    assert report["methods"]["baseline"]["accuracy"]["count"] == 3 and eds["accuracy"]["count"] == 4
    assert eds["delta_accuracy"]["delta"] == pytest.approx(0.25) and eds["changed"] == 1
    assert eds["delta_correct_logprob"]["delta"] == pytest.approx((np.log(0.7) - np.log(0.1)) / 4)
    assert "| eds | 100.0%" in capability.markdown_table(report)
