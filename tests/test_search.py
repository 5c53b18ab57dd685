"""The adaptive settings search (`eds_jax.training.search`) on hand-made objectives: the refinement
rule alone (`next_values`), and the whole `run_search` loop with generation and judging replaced by
functions of the steering value, so screening, merging and refinement run as they do on a model."""
import numpy as np
import pytest

from eds_jax.judging.helpfulness import HELPFUL, INCOHERENT, REFUSAL, Judged
from eds_jax.training import search

TOL = search.Tolerances(max_refusal_drop=0.05, max_incoherence_rise=0.05)
COARSE = (0.01, 0.0316, 0.1, 0.316, 1.0)
BASE = {"setting": search.UNSTEERED, "benign_helpful": 0.5, "harmful_refusal": 0.4, "incoherent": 0.02}


def bump(optimum, height=0.3, width=0.5):
    """Benign helpfulness peaking at `optimum` on a log scale; refusal and coherence kept."""
    def row(value):
        helpful = 0.5 + height * np.exp(-((np.log10(abs(value)) - np.log10(optimum)) / width) ** 2)
        return {"setting": f"v={value}", "v": value, "benign_helpful": float(helpful),
                "harmful_refusal": 0.4, "incoherent": 0.02}
    return row


def drive(objective, coarse=COARSE, rounds=4, extensions=2):
    """The loop of `run_search` on an objective {value -> row}: the grid, then refinement rounds."""
    evaluated = {0: {v: objective(v) for v in coarse}}
    search.refine(evaluated, BASE, TOL, search.AdaptiveSearch(refine_rounds=rounds, max_extensions=extensions),
                  lambda g, values: evaluated[g].update({v: objective(v) for v in values}))
    best, _ = search.choose_setting([BASE] + list(evaluated[0].values()), TOL)
    return best, evaluated[0]


def test_search_refines_to_an_interior_optimum_between_grid_points():
    best, evaluated = drive(bump(0.05))
    # the grid's best is 0.0316 (helpful 0.77); refinement lands within 20% of 0.05
    assert 0.05 / 1.2 < best["v"] < 0.05 * 1.2, sorted(evaluated)
    assert best["benign_helpful"] > bump(0.05)(0.0316)["benign_helpful"]
    assert all(0.01 <= v <= 1.0 for v in evaluated)  # an interior optimum needs no extension


def test_search_extends_past_the_edge_where_the_best_sits():
    best, evaluated = drive(bump(5.0))
    assert max(evaluated) > 1.0  # stepped past the grid's top edge
    assert best["v"] > 2.0, sorted(evaluated)
    best, evaluated = drive(bump(0.002))
    assert min(evaluated) < 0.01 and best["v"] < 0.006, sorted(evaluated)


def test_search_extensions_are_bounded():
    _, evaluated = drive(bump(1000.0), rounds=10, extensions=2)
    assert max(evaluated) == pytest.approx(1.0 * 3.16 ** 2, rel=1e-2)  # two steps past the edge, no more


def test_search_looks_gentler_when_no_setting_keeps_the_constraints():
    def objective(value):  # every setting from 0.01 up costs 10 points of harmful refusal
        refusal = 0.4 if value < 0.005 else 0.3
        return {"setting": f"v={value}", "v": value, "benign_helpful": 0.6, "harmful_refusal": refusal,
                "incoherent": 0.02}
    proposals, used = search.next_values({0: {v: objective(v) for v in COARSE}}, BASE, TOL,
                                         extensions_left=2)
    assert used == 1 and proposals == [(0, pytest.approx(0.01 / 3.16, rel=1e-3))]
    best, _ = drive(objective)
    assert best["v"] < 0.005  # found the gentle setting that keeps refusals


def test_search_refines_negative_coefficients_by_magnitude():
    best, evaluated = drive(bump(0.05), coarse=tuple(-v for v in COARSE))
    assert all(v < 0 for v in evaluated)
    assert 0.05 / 1.2 < -best["v"] < 0.05 * 1.2


def test_search_settings_are_checked():
    with pytest.raises(ValueError, match="screen_fraction=1.0"):
        search.AdaptiveSearch(screen_fraction=1.0)
    with pytest.raises(ValueError, match="refine_rounds=-1"):
        search.AdaptiveSearch(refine_rounds=-1)
    with pytest.raises(ValueError, match="min_ratio=1.0"):
        search.AdaptiveSearch(min_ratio=1.0)


class FakeJudge:
    """Responses are "helpful", "refusal" or "incoherent" already; the judge reads them."""

    def judge(self, pre, prompts, responses, batch_size=16, nll=None):
        assert len(prompts) == len(responses)
        return Judged(list(responses), np.zeros(len(responses)))


def test_run_search_screens_refines_and_merges(monkeypatch):
    """The loop with generation replaced by a function of the per-row steering value: values above
    0.5 turn everything incoherent (screened out on the subset, never run on the rest); benign
    helpfulness grows with the value up to 0.2, after which harmful refusals fall."""
    import eds_jax.core.decoding as decoding
    benign = [f"b{i}" for i in range(20)]
    harmful = [f"h{i}" for i in range(10)]
    calls = []

    def answer(prompt, value):
        i = int(prompt[1:])
        if value > 0.5:
            return INCOHERENT
        if prompt[0] == "b":  # helpful for the first 10 + 40 * value (capped at 0.2) prompts
            return HELPFUL if i < 10 + 40 * min(value, 0.2) else REFUSAL
        return REFUSAL if i < 6 - (20 * (value - 0.2) if value > 0.2 else 0) else HELPFUL

    def fake_generate(pre, prompts, steering=None, **_):
        values = np.zeros(len(prompts)) if steering is None else steering
        calls.append(len(prompts))
        return [answer(p, float(v)) for p, v in zip(prompts, values)]

    monkeypatch.setattr(decoding, "generate_text", fake_generate)
    group = search.SettingGroup({"layers": [1]}, "eta", (0.01, 0.0316, 0.1, 0.316, 1.0), lambda v: v)
    adaptive = search.AdaptiveSearch(refine_rounds=3, max_extensions=2, screen_fraction=0.5)
    table, responses = search.run_search(None, benign, harmful, [group], FakeJudge(), adaptive, TOL,
                                         system=None, max_new_tokens=4, batch_size=8, progress=False)
    rows = {r.get("eta"): r for r in table[1:]}
    assert table[0]["benign_helpful"] == 0.5 and table[0]["harmful_refusal"] == 0.6
    screened = [v for v, r in rows.items() if r.get("screened_out")]
    # 1.0 is incoherent, 0.316 has lost 2 of 10 harmful refusals (subset: more than 5 + 5 points)
    assert screened == [0.316, 1.0] and rows[1.0]["benign_n"] == 10 and rows[1.0]["harmful_n"] == 5
    assert sum(r is None for r in responses["layers=[1] eta=1.0"]) == 15  # never ran on the rest
    best, reason = search.choose_setting(table, TOL)
    assert not best.get("screened_out")
    # the grid's best is 0.1 (helpful 0.75); helpfulness tops out at 0.9 from eta 0.175, and refusals
    # fall past 0.2: refinement finds the plateau between grid points
    assert 0.175 <= best["eta"] <= 0.225 and best["benign_helpful"] == 0.9, (sorted(rows), reason)
    assert all(r["benign_n"] == 20 and r["harmful_n"] == 10 for r in rows.values() if not r.get("screened_out"))
    # selectivity: of the 10 benign and 6 harmful unsteered refusals, the chosen setting removed 8 benign ones
    assert best["refusals_removed"] == {"benign": [8, 10], "harmful": [0, 6]}
    assert "| +0.000 | 8/10 / 0/6 | yes |" in search.markdown_table(table, best["setting"])
    # its paired evidence: 8 benign prompts became helpful, none stopped being (p = 1/256)
    assert best["benign_helpful_gained_lost"] == [8, 0]
    assert "8 benign validation prompts became helpful and 0 stopped being (sign test p = 0.0039)" in reason
    assert "within the noise" not in reason
    assert calls[0] == 30  # the unsteered run on every prompt, then screens of 15 prompts per value
    assert calls[1] == 15 * 5
    # every row names its group and float, which the monotone rule reads; here it agrees
    assert all(r["group"] == "layers=[1]" and r["swept"] == "eta" for r in table[1:])
    assert search.choose_setting(table, search.Tolerances(0.05, 0.05, monotone=True))[0] is best


def test_deployments_resolve_by_name():
    from eds_jax.core import deployment
    assert deployment.resolve_system("deployment:few_shot") == deployment.OVER_CAUTIOUS_SYSTEM
    assert deployment.resolve_system("Be careful.") == "Be careful." and deployment.resolve_system(None) is None
    assert len(deployment.DEPLOYMENTS) >= 4 and len(set(deployment.DEPLOYMENTS.values())) == len(deployment.DEPLOYMENTS)
    with pytest.raises(ValueError, match="'deployment:nope' names no deployment"):
        deployment.resolve_system("deployment:nope")


def test_sign_test_and_the_weak_gain_warning():
    assert search.sign_test(5, 0) == 1 / 32 and search.sign_test(3, 2) == 0.5 and search.sign_test(0, 0) == 1.0
    assert search.sign_test(8, 2) == pytest.approx(56 / 1024)
    weak = dict(BASE, setting="v=0.1", benign_helpful=0.55, benign_helpful_gained_lost=[3, 1])
    row, reason = search.choose_setting([BASE, weak], TOL)
    assert row is weak and "(sign test p = 0.31): a gain this small is within the noise" in reason
    strong = dict(weak, benign_helpful_gained_lost=[6, 0])
    assert "within the noise" not in search.choose_setting([BASE, strong], TOL)[1]


def test_run_search_judges_the_baseline_with_the_given_scores(monkeypatch):
    """`baseline_nll` (the scores that calibrated the judge) reaches the baseline's judgement, so
    the unsteered answers are not scored twice; without the baseline answers it is refused."""
    import eds_jax.core.decoding as decoding
    seen = []

    class Recording(FakeJudge):
        def judge(self, pre, prompts, responses, batch_size=16, nll=None):
            seen.append(None if nll is None else list(nll))
            return super().judge(pre, prompts, responses, batch_size)

    monkeypatch.setattr(decoding, "generate_text",
                        lambda pre, prompts, steering=None, **_: [HELPFUL] * len(prompts))
    group = search.SettingGroup({"layers": [1]}, "eta", (0.1,), lambda v: v)
    baseline, scores = [HELPFUL, REFUSAL, REFUSAL], [1.5, np.nan, np.nan]
    search.run_search(None, ["b0"], ["h0", "h1"], [group], Recording(), search.GRID, system=None,
                      max_new_tokens=4, batch_size=8, progress=False, baseline=baseline,
                      baseline_nll=np.array(scores))
    assert seen[0] == pytest.approx(scores, nan_ok=True) and seen[1:] == [None]
    with pytest.raises(ValueError, match="baseline_nll scores given baseline responses"):
        search.run_search(None, ["b0"], ["h0"], [group], Recording(), search.GRID, system=None,
                          max_new_tokens=4, batch_size=8, progress=False, baseline_nll=np.zeros(2))


def test_confirm_choice_keeps_the_best_setting_that_passes_again_on_held_back_prompts(monkeypatch):
    """The search's best setting (0.3) passed the rule on its prompts by luck: on the held-back
    prompts ("c…") it turns 3 of 10 benign answers incoherent. The next best (0.1) passes there too
    and is kept; when no candidate passes, the model stays unsteered."""
    import eds_jax.core.decoding as decoding
    decoded = []

    def answer(prompt, value):
        i = int(prompt[1:])
        if prompt[0] == "h":
            return REFUSAL
        if prompt[0] == "c" and value >= 0.3 and i < 3:
            return INCOHERENT
        return HELPFUL if i < 4 + 20 * value else REFUSAL

    def fake_generate(pre, prompts, steering=None, **_):
        decoded.append(sorted(set(np.round(steering, 3).tolist())))
        return [answer(p, float(v)) for p, v in zip(prompts, steering)]

    monkeypatch.setattr(decoding, "generate_text", fake_generate)
    group = search.SettingGroup({"layers": [1]}, "eta", (0.03, 0.1, 0.3), lambda v: v)
    benign, harmful = [f"b{i}" for i in range(10)], ["h0", "h1"]
    held_benign, held_harmful = [f"c{i}" for i in range(10)], ["h2", "h3"]
    base = lambda prompts: [answer(p, 0.0) for p in prompts]
    table, _ = search.run_search(None, benign, harmful, [group], FakeJudge(), search.GRID, TOL, system=None,
                                 max_new_tokens=4, batch_size=8, progress=False, baseline=base(benign + harmful))
    assert search.choose_setting(table, TOL)[0]["eta"] == 0.3  # helpful 0.4 -> 1.0 on the search's prompts
    decoded.clear()
    common = dict(candidates=2, baseline=base(held_benign + held_harmful), system=None, max_new_tokens=4,
                  batch_size=8, progress=False)
    row, reason, confirmed = search.confirm_choice(None, table, [group], FakeJudge(), TOL, held_benign,
                                                   held_harmful, **common)
    assert row["eta"] == 0.1 and row is next(r for r in table if r.get("eta") == 0.1)
    assert decoded == [[0.1, 0.3]]  # the two best, in one batch, on the held-back prompts only
    by_eta = {r.get("eta"): r for r in confirmed}
    assert by_eta[0.3]["benign_incoherent"] == 0.3 and by_eta[0.1]["benign_helpful"] == 0.6
    assert "confirmed on 10 + 2 held-back validation prompts: benign helpful 40.0% -> 60.0%" in reason
    assert "failed there first: layers=[1] eta=0.3" in reason
    # one candidate only, and it fails there: unsteered
    row, reason, _ = search.confirm_choice(None, table, [group], FakeJudge(), TOL, held_benign, held_harmful,
                                           **(common | {"candidates": 1}))
    assert row is table[0] and "none of the 1 best settings passed the rule again" in reason


def test_hold_back_splits_each_kind_and_checks_the_config():
    from configs.smollm2_135m import get_config
    from eds_jax.training import pipeline
    searched, held = pipeline.hold_back(10, 4, 0.5, seed=0)
    assert sorted(np.concatenate([searched, held]).tolist()) == list(range(14))
    assert (held < 10).sum() == 5 and (held >= 10).sum() == 2
    assert pipeline.hold_back(10, 4, 0.0, seed=0)[1].size == 0
    cfg = get_config()
    cfg.sweep.confirm_fraction = 1.0
    with pytest.raises(ValueError, match=r"config.sweep.confirm_fraction=1.0: expected a share"):
        pipeline.check_config(cfg)
    cfg.sweep.confirm_fraction, cfg.sweep.confirm_candidates = 0.5, 0
    with pytest.raises(ValueError, match=r"config.sweep.confirm_candidates=0: expected an integer >= 1"):
        pipeline.check_config(cfg)


def _row(value, incoherent, refusal=0.4, helpful=0.6, group="layers=[1]", **extra):
    return {"setting": f"{group} eta={value}", "group": group, "swept": "eta", "eta": value,
            "benign_helpful": helpful, "harmful_refusal": refusal, "incoherent": incoherent, **extra}


def test_monotone_rule_rejects_a_setting_whose_gentler_neighbour_broke_down():
    """A dip in incoherence at the breakdown edge (noise of a few prompts) passes the plain rule;
    under the monotone rule a setting passes only when every gentler one in its group passed."""
    table = [BASE,
             _row(0.1, 0.03, helpful=0.62), _row(0.3, 0.04, helpful=0.66),
             _row(0.5, 0.12, helpful=0.70),  # broke down: +10 points incoherent
             _row(0.7, 0.05, helpful=0.80),  # read coherent again: the dip
             _row(0.05, 0.02, helpful=0.64, group="floor"), _row(0.2, 0.09, helpful=0.65, group="floor")]
    plain, _ = search.choose_setting(table, TOL)
    assert plain["eta"] == 0.7
    mono = search.Tolerances(0.05, 0.05, monotone=True)
    best, reason = search.choose_setting(table, mono)
    # the best that passes with its whole gentler side: 0.3 in the first group (0.66 > the floor
    # group's 0.64; 0.2 there rose 7 points); the returned row keeps its own measured rates
    assert best["eta"] == 0.3 and best["group"] == "layers=[1]" and best["incoherent"] == 0.04, reason
    envelope = {(r["group"], r["eta"]): r for r in search.monotone_envelope(table[1:])}
    assert envelope[("layers=[1]", 0.7)]["incoherent"] == 0.12
    assert envelope[("layers=[1]", 0.3)]["incoherent"] == 0.04
    assert table[4]["incoherent"] == 0.05  # the table itself is not changed


def test_monotone_envelope_carries_refusal_per_source_and_screened_rows_forward():
    rows = [_row(0.1, 0.02, refusal=0.30, harmful_refusal_by_source={"a": 0.5, "b": 0.2}),
            _row(0.2, 0.02, refusal=0.35, harmful_refusal_by_source={"a": 0.4, "b": 0.3}),
            _row(0.4, 0.02, screened_out=True), _row(0.8, 0.02)]
    out = search.monotone_envelope(list(reversed(rows)))  # order in the table does not matter
    by = {r["eta"]: r for r in out}
    assert by[0.2]["harmful_refusal"] == 0.30
    assert by[0.2]["harmful_refusal_by_source"] == {"a": 0.4, "b": 0.2}
    assert by[0.8]["screened_out"] and not by[0.2]["screened_out"]  # longer than a dropped step
    with pytest.raises(ValueError, match="has no group"):
        search.monotone_envelope([{"setting": "v=1", "v": 1.0}])


def test_monotone_rule_steers_the_refinement_too():
    """`next_values` refines around the setting the monotone rule keeps, not past the dip."""
    incoherent = {0.01: 0.02, 0.0316: 0.02, 0.1: 0.02, 0.316: 0.15, 1.0: 0.02}
    evaluated = {0: {v: _row(v, incoherent[v], helpful=0.5 + v / 4) for v in COARSE}}
    proposals, _ = search.next_values(evaluated, BASE, TOL, extensions_left=2)
    assert sorted(v for _, v in proposals) == pytest.approx([np.sqrt(0.316), 3.164], rel=1e-3)
    proposals, _ = search.next_values(evaluated, BASE, search.Tolerances(0.05, 0.05, True),
                                      extensions_left=2)
    assert sorted(v for _, v in proposals) == pytest.approx([np.sqrt(0.00316), np.sqrt(0.0316)], rel=1e-3)


def test_isotonic_fit_pools_adjacent_violators():
    assert search.isotonic([0.1, 0.3, 0.2, 0.4]) == pytest.approx([0.1, 0.25, 0.25, 0.4])
    assert search.isotonic([0.3, 0.1, 0.2]) == pytest.approx([0.2, 0.2, 0.2])
    assert search.isotonic([0.5, 0.6, 0.4], rising=False) == pytest.approx([0.55, 0.55, 0.4])
    assert search.isotonic([0.1, 0.2]) == [0.1, 0.2]  # already in order: unchanged


def test_isotonic_fit_does_not_let_one_noisy_gentle_step_sink_the_group():
    """Unsteered 5% incoherent; the gentlest step reads 12.5% (3 prompts of 40 more), the next 5%
    and most helpful. The worst-rate fit carries 12.5% to every longer step and nothing passes;
    the isotonic fit pools the two (8.75%, within 5 points) and keeps the helpful one. A real
    breakdown (a dip after a rise that stays) still sinks the steps past it."""
    base = dict(BASE, incoherent=0.05)
    table = [base, _row(0.01, 0.125, helpful=0.62), _row(0.0316, 0.05, helpful=0.77),
             _row(0.1, 0.30, helpful=0.55)]
    worst = search.Tolerances(0.05, 0.05, monotone=True)
    iso = search.Tolerances(0.05, 0.05, monotone=True, monotone_fit="isotonic")
    assert search.choose_setting(table, worst)[0] is base
    assert search.choose_setting(table, iso)[0]["eta"] == 0.0316
    dip = [base, _row(0.1, 0.06, helpful=0.6), _row(0.3, 0.25, helpful=0.7), _row(0.5, 0.08, helpful=0.9)]
    assert search.choose_setting(dip, iso)[0]["eta"] == 0.1  # 0.5's dip pools with 0.3: 16.5%
    with pytest.raises(ValueError, match="monotone_fit='median'"):
        search.Tolerances(monotone=True, monotone_fit="median")


def test_nll_shift_pairs_the_answers_scored_both_ways():
    before = np.array([1.0, 2.0, np.nan, 1.5])
    after = np.array([1.5, np.nan, 3.0, 2.5])  # prompt 1 became a refusal, prompt 2 stopped being one
    assert search.nll_shift(before, after) == pytest.approx(0.75)
    assert np.isnan(search.nll_shift(np.array([np.nan]), np.array([1.0])))


def test_run_search_rows_carry_the_nll_shift_and_max_nll_rise_caps_it(monkeypatch):
    """Benign answers turn helpful as the step grows (up to 0.2) and grow less fluent with it
    (NLL 1 + 2 x step): the count-based rule keeps the most helpful step, a cap of 0.3 nats/token
    on the paired NLL rise keeps the most helpful step at or below 0.15. Refusals carry no NLL
    and stay out of the pairing."""
    import eds_jax.core.decoding as decoding
    benign, harmful = [f"b{i}" for i in range(20)], [f"h{i}" for i in range(10)]

    def answer(prompt, value):
        i = int(prompt[1:])
        if prompt[0] == "b" and i < 10 + 40 * min(value, 0.2):
            return f"{HELPFUL}:{1.0 + 2 * value}"
        return f"{REFUSAL}:nan" if prompt[0] == "b" or i < 6 else f"{HELPFUL}:1.0"

    class NllJudge:
        def judge(self, pre, prompts, responses, batch_size=16, nll=None):
            parts = [r.split(":") for r in responses]
            return Judged([o for o, _ in parts], np.array([float(x) for _, x in parts]))

    monkeypatch.setattr(decoding, "generate_text", lambda pre, prompts, steering=None, **_: [
        answer(p, float(v)) for p, v in zip(prompts, np.zeros(len(prompts)) if steering is None else steering)])
    group = search.SettingGroup({"layers": [1]}, "eta", (0.01, 0.0316, 0.1, 0.316, 1.0), lambda v: v)
    adaptive = search.AdaptiveSearch(refine_rounds=3, max_extensions=2, screen_fraction=0.5)
    capped = search.Tolerances(0.05, 0.05, monotone=True, max_nll_rise=0.3)
    for tolerances, top in ((TOL, 0.225), (capped, 0.15)):
        table, _ = search.run_search(None, benign, harmful, [group], NllJudge(), adaptive, tolerances,
                                     system=None, max_new_tokens=4, batch_size=8, progress=False)
        assert all(r["benign_nll_shift"] == pytest.approx(2 * r["eta"])
                   for r in table[1:] if not r.get("screened_out"))
        best, _ = search.choose_setting(table, tolerances)
        assert 0.09 <= best["eta"] <= top and best["benign_nll_shift"] <= 0.3 + (top > 0.2)
    assert best["eta"] > 0.1  # the cap refined up to it, past the grid's 0.1


def test_max_nll_rise_is_read_monotone_and_checked():
    """A gentler step whose answers lost fluency sinks the longer ones under the monotone rule,
    as a count would; a table without the shift is refused rather than read as unconstrained."""
    base = dict(BASE, incoherent=0.05)
    table = [base, _row(0.01, 0.05, helpful=0.62, benign_nll_shift=0.4),
             _row(0.0316, 0.05, helpful=0.77, benign_nll_shift=0.1)]
    cap = lambda monotone: search.Tolerances(0.05, 0.05, monotone=monotone, max_nll_rise=0.3)
    assert search.choose_setting(table, cap(False))[0]["eta"] == 0.0316
    assert search.choose_setting(table, cap(True))[0] is base
    assert search.choose_setting(table, search.Tolerances(0.05, 0.05, monotone=True))[0]["eta"] == 0.0316
    with pytest.raises(ValueError, match="has no benign_nll_shift"):
        search.choose_setting([base, _row(0.01, 0.05)], cap(False))
    nan = [base, _row(0.01, 0.05, helpful=0.9, benign_nll_shift=float("nan"))]
    assert search.choose_setting(nan, cap(False))[0] is base
    with pytest.raises(ValueError, match=r"max_nll_rise=-0.1: expected a number >= 0"):
        search.Tolerances(max_nll_rise=-0.1)
    from configs.smollm2_135m import get_config
    from eds_jax.training import pipeline
    cfg = get_config()
    cfg.sweep.max_nll_rise = -0.1
    with pytest.raises(ValueError, match=r"config.sweep.max_nll_rise=-0.1: expected a number >= 0"):
        pipeline.check_config(cfg)


def test_group_margin_refines_every_near_best_group():
    """Two groups whose grid bests are 2 points apart: by default only the better one is refined;
    with group_margin=0.05 the other's best gets its midpoints too (and its edge step, sharing the
    extensions), and a group 20 points behind is left alone."""
    def grid(optimum, height, group):
        return {v: dict(bump(optimum, height)(v), group=group, swept="v") for v in COARSE}
    evaluated = {0: grid(0.1, 0.30, "a"), 1: grid(0.05, 0.33, "b"), 2: grid(0.1, 0.1, "c")}
    tops = {g: max(rows, key=lambda v: rows[v]["benign_helpful"]) for g, rows in evaluated.items()}
    assert tops[0] == tops[2] == 0.1 and tops[1] == 0.0316
    alone, _ = search.next_values(evaluated, BASE, TOL, extensions_left=2)
    assert {g for g, _ in alone} == {0}
    wide, _ = search.next_values(evaluated, BASE, TOL, extensions_left=2, group_margin=0.05)
    assert sorted(v for g, v in wide if g == 1) == pytest.approx([np.sqrt(0.01 * 0.0316), np.sqrt(0.0316 * 0.1)], rel=1e-3)
    assert [v for g, v in wide if g == 0] == [v for _, v in alone] and 2 not in {g for g, _ in wide}
    with pytest.raises(ValueError, match=r"search group_margin=1.5: expected a rate in \[0, 1\]"):
        search.AdaptiveSearch(group_margin=1.5)
