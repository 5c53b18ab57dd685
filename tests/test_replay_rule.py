"""`benchmarks/replay_rule.py`: a finished search replayed under another choice rule."""
import importlib.util
import os

import pytest

from eds_jax.training import search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("replay_rule", os.path.join(ROOT, "benchmarks", "replay_rule.py"))
replay_rule = importlib.util.module_from_spec(spec)
spec.loader.exec_module(replay_rule)

GRID = (0.01, 0.0316, 0.1, 0.316, 1.0)
BASE = {"setting": search.UNSTEERED, "benign_helpful": 0.5, "benign_refusal": 0.48, "benign_incoherent": 0.02,
        "harmful_refusal": 0.4, "harmful_incoherent": 0.02, "incoherent": 0.02,
        "harmful_refusal_by_source": {"harmful": 0.4}}


def measure(value):
    """Helpfulness rising with the step; answers break down at 0.316 and read coherent at 1.0."""
    incoherent = 0.15 if 0.2 < value < 0.5 else 0.02
    return {"setting": f"layers=[1] eta={value}", "group": "layers=[1]", "swept": "eta", "eta": value,
            "benign_helpful": 0.5 + value / 4, "benign_refusal": 0.5 - value / 4 - incoherent,
            "benign_incoherent": incoherent, "harmful_refusal": 0.4,
            "harmful_incoherent": 0.02, "incoherent": incoherent, "harmful_refusal_by_source": {"harmful": 0.4}}


def searched(tolerances):
    """The table `run_search`'s loop would measure on `measure` under `tolerances`."""
    evaluated = {0: {v: measure(v) for v in GRID}}
    search.refine(evaluated, BASE, tolerances, replay_rule.SHARED_SEARCH,
                  lambda g, values: evaluated[g].update({v: measure(v) for v in values}))
    return [BASE] + [evaluated[0][v] for v in sorted(evaluated[0])]


def test_replay_reproduces_the_search_and_says_where_a_variant_diverges():
    plain, mono = search.Tolerances(), search.Tolerances(monotone=True)
    table = searched(plain)
    chosen, _ = search.choose_setting(table, plain)
    row, _ = replay_rule.replay(table, plain, GRID, swept="eta")
    assert row["setting"] == chosen["setting"] and chosen["eta"] > 1.0  # past the dip, extended
    row, reason = replay_rule.replay(table, mono, GRID, swept="eta")
    assert row is None and "diverges: it would try layers=[1] eta=0.05621" in reason
    # on the table the monotone search itself measured, the replay agrees with it
    table = searched(mono)
    row, _ = replay_rule.replay(table, mono, GRID, swept="eta")
    assert row["setting"] == search.choose_setting(table, mono)[0]["setting"] and row["eta"] < 0.2


def test_a_suite_training_md_reads_back_as_the_table(tmp_path):
    table = searched(search.Tolerances())
    table[3] = table[3] | {"screened_out": True, "benign_n": 40, "harmful_n": 40}
    chosen, _ = search.choose_setting(table, search.Tolerances())
    path = tmp_path / "training.md"
    path.write_text("| layer | AUC |\n|---|---|\n| 1 | 0.9 |\n\n" + search.markdown_table(table, chosen["setting"]))
    read, label = replay_rule.read_markdown(str(path), "eta", counts=(80, 79))
    assert label == chosen["setting"] and len(read) == len(table)
    assert read[3]["screened_out"] and read[1]["group"] == "layers=[1]" and read[1]["eta"] == table[1]["eta"]
    assert read[1]["harmful_refusal_by_source"] == {"harmful": pytest.approx(0.4)}
    row, _ = replay_rule.replay(read, search.Tolerances(), GRID, swept="eta")
    assert row["setting"] == chosen["setting"]


def test_nll_file_gives_each_row_its_paired_shift(tmp_path):
    """`--nll`: each measured row gets `search.nll_shift` over the prompts both settings answered
    (refusals are null); a row the file lacks is an error, not a silent zero."""
    import json
    rows = [dict(BASE)] + [measure(v) for v in (0.01, 0.0316)]
    path = tmp_path / "nll.json"
    path.write_text(json.dumps({search.UNSTEERED: {"p": 1.0, "q": 2.0, "r": None},
                                "layers=[1] eta=0.01": {"p": 1.5, "q": None, "r": 3.0},
                                "layers=[1] eta=0.0316": {"p": 1.0, "q": 2.5, "r": 1.0}}))
    shifted = replay_rule.with_nll_shift(rows, str(path))
    assert [r.get("benign_nll_shift") for r in shifted] == pytest.approx([None, 0.5, 0.25])
    path.write_text(json.dumps({search.UNSTEERED: {"p": 1.0}}))
    with pytest.raises(SystemExit, match="no NLLs for 'layers=\\[1\\] eta=0.01'"):
        replay_rule.with_nll_shift(rows, str(path))
