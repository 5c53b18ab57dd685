"""Replay a finished settings search under a variant of the choice rule, without decoding anything.

The search's refinement (`search.next_values`) and choice (`search.choose_setting`) are pure
functions of the table of measured settings, so a saved table answers "what would the search have
chosen under rule X" exactly, as long as every setting the replay proposes was measured in the
saved run. When one was not, the replay says which: the search has to be run again for that
deployment.

  python benchmarks/replay_rule.py runs/deployments_generated/*/ebms --monotone
  python benchmarks/replay_rule.py benchmarks/results/deployments_generated/persona/training.md --monotone
  python benchmarks/replay_rule.py runs/deployments_generated/*/ebms --monotone_fit=isotonic
  python benchmarks/replay_rule.py runs/x/ebms --nll=x_nll.json --max_nll_rise=0.15
  python benchmarks/replay_rule.py runs/deployments_generated/*/ebms --group_margin=0.05

`--nll`: per path, the benign answers' NLLs that `benchmarks/sweep_nll.py --save` wrote for that
search; each row then carries its `benign_nll_shift`, so `--max_nll_rise` can be replayed.

Each argument is an EBM directory (its metadata holds the sweep) or a `training.md` written by
`benchmarks/deployment_suite.py` (rates to 0.1%, pooled incoherence rebuilt from the counts).
Prints, per table: the saved choice, the replay under the saved rule (a check: it must agree), and
the replay under the variant.
"""
import dataclasses
import os
import sys

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs.smollm2_135m_shared import get_config as shared_config  # noqa: E402
from eds_jax.training import search  # noqa: E402
from eds_jax.training.pipeline import adaptive_search  # noqa: E402

FLAGS = flags.FLAGS


def grouped(table: list[dict], swept: str) -> list[dict]:
    """The table with each steered row's group and float named (tables saved before rows carried
    them: the float is the last item of the setting's label)."""
    out = [dict(table[0])]
    for r in table[1:]:
        out.append({"group": r["setting"].rsplit(" ", 1)[0], "swept": swept} | dict(r))
    return out


# the suite's search (the shared config's), for tables that do not say theirs
SHARED_SEARCH = adaptive_search(shared_config())


class Unmeasured(Exception):
    """The replay proposed a setting the saved table never measured."""


def replay(table: list[dict], tolerances: search.Tolerances, grid, *, swept: str = "eta_fraction",
           adaptive: search.AdaptiveSearch = SHARED_SEARCH) -> tuple[dict | None, str]:
    """(chosen row, reason) of the search (`search.refine` under `adaptive`) on `table`'s
    measurements under `tolerances`; (None, why) when it proposes a setting the table lacks.
    `grid`: each group's first values."""
    base, rows = table[0], table[1:]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    measured = {(r["group"], float(r[r["swept"]])): r for r in rows}
    evaluated = {}
    for g, name in enumerate(groups):
        missing = [v for v in grid if (name, float(v)) not in measured]
        if missing:
            return None, f"the table lacks {name} at the grid's {missing}"
        evaluated[g] = {float(v): measured[(name, float(v))] for v in grid}

    def measure(g, values):
        for v in values:
            if (groups[g], v) not in measured:
                raise Unmeasured(f"diverges: it would try {groups[g]} {swept}={v}, never measured")
            evaluated[g][v] = measured[(groups[g], v)]

    try:
        search.refine(evaluated, base, tolerances, adaptive, measure)
    except Unmeasured as why:
        return None, str(why)
    return search.choose_setting([base] + [evaluated[g][v] for g in evaluated
                                           for v in sorted(evaluated[g], key=abs)], tolerances)


def read_markdown(path: str, swept: str, counts=(80, 79)) -> tuple[list[dict], str]:
    """(table, chosen label) from a suite `training.md`'s sweep table; `counts`: the benign and
    harmful validation prompts behind a full row (a screened row names its own)."""
    with open(path) as f:
        lines = f.read().splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("| setting |"))
    cols = [c.strip() for c in lines[head].split("|")[1:-1]]
    table, chosen = [], None
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        cell = dict(zip(cols, (c.strip() for c in line.split("|")[1:-1])))
        rate = lambda name: float(cell[name].rstrip("%")) / 100
        screened = cell["chosen"].startswith("screened")
        n_benign, n_harmful = map(int, cell["chosen"].split("(on ")[1].split(" prompts")[0].split(" + ")) \
            if screened else (None, None)
        row = {"setting": cell["setting"], "benign_helpful": rate("benign helpful"),
               "benign_incoherent": rate("benign incoherent"), "harmful_refusal": rate("harmful refused"),
               "harmful_incoherent": rate("harmful incoherent")}
        if screened:
            row["screened_out"] = True
        else:
            row["harmful_refusal_by_source"] = {c[len("refused: "):]: rate(c) for c in cols
                                                if c.startswith("refused: ")}
        row["_n"] = (n_benign, n_harmful)
        if cell["chosen"] == "yes":
            chosen = cell["setting"]
        if row["setting"] != search.UNSTEERED:
            row[swept] = float(row["setting"].rsplit("=", 1)[1])
        table.append(row)
    n_benign, n_harmful = counts
    for row in table:  # pooled incoherence, weighted by each kind's prompt count
        nb, nh = row.pop("_n")
        nb, nh = nb or n_benign, nh or n_harmful
        row["incoherent"] = (row["benign_incoherent"] * nb + row["harmful_incoherent"] * nh) / (nb + nh)
    return grouped(table, swept), chosen


def load(path: str, swept: str, counts=(80, 79)
         ) -> tuple[list[dict], str, search.Tolerances, search.AdaptiveSearch]:
    """(table, chosen label, saved tolerances, the saved search) from an EBM directory or a
    training.md (written by the suite: the shared config's search)."""
    if path.endswith(".md"):
        table, chosen = read_markdown(path, swept, counts)
        return table, chosen, search.Tolerances(), SHARED_SEARCH
    from eds_jax.core.saved import read_metadata
    sweep = read_metadata(path).get("sweep")
    if not sweep:
        raise SystemExit(f"{path}: its metadata holds no sweep")
    adaptive = search.AdaptiveSearch(**sweep["search"]) if sweep.get("search") else SHARED_SEARCH
    return grouped(sweep["table"], swept), sweep["chosen"], search.Tolerances(**sweep["tolerances"]), adaptive


def with_nll_shift(table: list[dict], path: str) -> list[dict]:
    """`table` with each steered row's `benign_nll_shift` (`search.nll_shift`) from the NLLs
    `sweep_nll.py --save` wrote ({setting: {prompt: NLL or null}})."""
    import json

    import numpy as np
    with open(path) as f:
        nll = json.load(f)
    base = nll[search.UNSTEERED]
    out = [dict(table[0])]
    for r in table[1:]:
        r = dict(r)
        if not r.get("screened_out"):
            if r["setting"] not in nll:
                raise SystemExit(f"{path}: no NLLs for {r['setting']!r}")
            mine = nll[r["setting"]]
            common = [p for p in base if p in mine]
            as_array = lambda d: np.array([np.nan if d[p] is None else d[p] for p in common])
            r["benign_nll_shift"] = search.nll_shift(as_array(base), as_array(mine))
        out.append(r)
    return out


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore
    if len(argv) < 2:
        raise app.UsageError("give EBM directories or training.md files")
    grid = [float(v) for v in FLAGS.grid]
    if FLAGS.nll and len(FLAGS.nll) != len(argv) - 1:
        raise app.UsageError(f"--nll names {len(FLAGS.nll)} files for {len(argv) - 1} paths")
    if FLAGS.max_nll_rise is not None and not FLAGS.nll:
        raise app.UsageError("--max_nll_rise needs each path's --nll file")
    for k, path in enumerate(argv[1:]):
        table, chosen, saved, adaptive = load(path, FLAGS.swept, [int(n) for n in FLAGS.validation_prompts])
        if FLAGS.nll:
            table = with_nll_shift(table, FLAGS.nll[k])
        variant = search.Tolerances(saved.max_refusal_drop, saved.max_incoherence_rise, FLAGS.monotone,
                                    FLAGS.monotone_fit, FLAGS.max_nll_rise)
        print(f"{path}\n  saved choice:   {chosen}")
        widened = dataclasses.replace(adaptive, group_margin=FLAGS.group_margin)
        for name, tolerances, how in (("saved rule", saved, adaptive), ("variant", variant, widened)):
            row, reason = replay(table, tolerances, grid, swept=FLAGS.swept, adaptive=how)
            shift = "" if row is None or "benign_nll_shift" not in row else \
                f" (benign NLL shift {row['benign_nll_shift']:+.3f})"
            print(f"  {name + ':':15} {reason if row is None else row['setting'] + shift}")


if __name__ == "__main__":
    flags.DEFINE_list("grid", [str(v) for v in search.LOG_FRACTIONS], "each group's first values")
    flags.DEFINE_string("swept", "eta_fraction", "the float each group varies")
    flags.DEFINE_bool("monotone", True, "the variant: the monotone rule (sweep.monotone)")
    flags.DEFINE_enum("monotone_fit", "worst", search.MONOTONE_FITS, "the variant's fit (sweep.monotone_fit)")
    flags.DEFINE_float("group_margin", None, "the variant's search refines every group's best "
                       "within this of the best's (sweep.group_margin)")
    flags.DEFINE_list("nll", [], "per path, the JSON of sweep_nll.py --save for its search")
    flags.DEFINE_float("max_nll_rise", None, "the variant's sweep.max_nll_rise (nats/token)")
    flags.DEFINE_list("validation_prompts", ["80", "79"], "benign, harmful prompt counts behind a "
                      "training.md's full rows (to rebuild pooled incoherence)")
    app.run(main)
