"""PNG figures: validation AUC per layer and energy histograms (training), the sweep trade-off, rates per set (evaluation)."""
from __future__ import annotations

import re

import numpy as np


def _figure(**kwargs):
    """A figure that is not registered with pyplot: saving it needs no backend, so importing this
    module leaves a notebook's inline plots alone."""
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def plot_layer_quality(path: str, layers, auc, sign_accuracy, chosen) -> None:
    fig = _figure(figsize=(max(6, 0.3 * len(layers)), 3.5))
    ax = fig.subplots()
    colours = ["tab:orange" if layer in chosen else "tab:blue" for layer in layers]
    ax.bar(layers, auc, color=colours, label="validation AUC (orange: chosen)")
    ax.plot(layers, sign_accuracy, "k.", label="sign accuracy (upstream)")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="layer (input of block)", ylabel="best-epoch score", ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_energy_histograms(path: str, layers, energy_good, energy_bad) -> None:
    """energy_good/bad: per chosen layer, validation energies of good and bad states."""
    fig = _figure(figsize=(3.2 * len(layers), 2.8))
    axes = fig.subplots(1, len(layers), squeeze=False)
    for ax, layer, good, bad in zip(axes[0], layers, energy_good, energy_bad):
        values = np.concatenate([good, bad])
        spread = max(float(np.ptp(values)), 1e-3 * max(1.0, float(np.abs(values).max())))
        bins = np.linspace(values.min() - 0.05 * spread, values.max() + 0.05 * spread, 21)
        ax.hist(good, bins=bins, alpha=0.6, label="good")
        ax.hist(bad, bins=bins, alpha=0.6, label="bad")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("energy")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_eval_rates(path: str, results: dict) -> None:
    """Per evaluation set, one stacked bar per method: helpful / refusal / incoherent (they sum to
    100%), with the bootstrap 95% interval of the set's metric (helpful or refusal)."""
    names = list(results)
    methods = list(dict.fromkeys(m for r in results.values() for m in r["methods"]))
    colours = {"helpful": "tab:green", "refusal": "tab:blue", "incoherent": "tab:red"}
    width = 0.8 / len(methods)
    fig = _figure(figsize=(max(7, 1.5 * len(names) * max(1, len(methods) / 3)), 4.2))
    ax = fig.subplots()
    ticks, labels = [], []
    for i, name in enumerate(names):
        for j, method in enumerate(methods):
            entry = results[name]["methods"].get(method)
            if entry is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            bottom = 0.0
            for outcome in ("helpful", "refusal", "incoherent"):
                height = 100 * entry[outcome]["rate"]
                ax.bar(x, height, width * 0.92, bottom=bottom, color=colours[outcome],
                       label=outcome if (i, j) == (0, 0) else None)
                if outcome == results[name]["metric"]:
                    low, high = 100 * entry[outcome]["low"], 100 * entry[outcome]["high"]
                    ax.errorbar(x, bottom + height, yerr=[[bottom + height - (bottom + low)],
                                                          [(bottom + high) - (bottom + height)]],
                                color="k", capsize=1.5, lw=0.8)
                bottom += height
            ticks.append(x)
            labels.append(method)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=6, rotation=90)
    for i, name in enumerate(names):
        ax.text(i, 103, f"{name}\n({results[name]['metric']})", ha="center", fontsize=7)
    ax.set(ylabel="responses (%)", ylim=(0, 115))
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


_SHORT = {"num_steps": "steps", "layers": "L", "energy_floor_quantile": "floor q",
          "eta_fraction": "frac", "eta": "eta", "coeff": "c"}


def _setting_labels(settings):
    """Short point labels: only the key=value parts that differ between the steered settings,
    plus the parts all of them share (for one caption)."""
    parsed = [dict(re.findall(r"(\w+)=(\[[^\]]*\]|\S+)", s)) for s in settings]
    steered = [p for p in parsed if p]
    keys = list(dict.fromkeys(k for p in steered for k in p))
    varying = [k for k in keys if len({p.get(k) for p in steered}) > 1 or any(k not in p for p in steered)]
    shared = " ".join(f"{_SHORT.get(k, k)} {steered[0][k]}" for k in keys if k not in varying)
    labels = []
    for setting, p in zip(settings, parsed):
        label = " ".join(f"{_SHORT.get(k, k)} {p[k]}" for k in varying if k in p)
        missing = ", ".join(_SHORT.get(k, k) for k in varying if k not in p)
        labels.append(setting if not p else label or f"no {missing}")
    return labels, shared


def plot_tradeoff(path: str, table, chosen: str) -> None:
    """The sweep's trade-off: benign helpful vs harmful refused, one point per setting, coloured
    by incoherence; the unsteered run and the chosen setting marked."""
    fig = _figure(figsize=(5.6, 4.2))
    ax = fig.subplots()
    x = [100 * r["benign_helpful"] for r in table]
    y = [100 * r["harmful_refusal"] for r in table]
    c = [100 * r["incoherent"] for r in table]
    points = ax.scatter(x, y, c=c, cmap="viridis_r", s=36, zorder=2)
    fig.colorbar(points, ax=ax, label="incoherent (%)")
    labels, shared = _setting_labels([r["setting"] for r in table])
    placed = []
    for r, label, xi, yi in zip(table, labels, x, y):
        weight = "bold" if r["setting"] == chosen else "normal"
        # points within a few percent of an earlier one get their label stacked below it
        stack = sum(abs(xi - px) < 6 and abs(yi - py) < 3 for px, py in placed)
        placed.append((xi, yi))
        ax.annotate(label, (xi, yi), fontsize=6, fontweight=weight, xytext=(3, 3 - 8 * stack),
                    textcoords="offset points")
    ax.scatter([x[0]], [y[0]], marker="s", facecolors="none", edgecolors="k", s=90, label="unsteered")
    chosen_index = [r["setting"] for r in table].index(chosen)
    ax.scatter([x[chosen_index]], [y[chosen_index]], marker="*", color="tab:red", s=140, zorder=3,
               label="chosen")
    ax.set_xlim(min(x) - 5, max(x) + 25)  # room for the labels right of the points
    ax.set(xlabel="benign helpful (%)", ylabel="harmful refused (%)",
           title="steering settings on validation prompts")
    if shared:
        ax.text(0.0, -0.16, "all: " + shared, transform=ax.transAxes, fontsize=6, va="top")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_method_tradeoffs(path: str, tables: dict, chosen: dict) -> None:
    """Each method's validation trade-off in one figure: benign helpful vs harmful refused, one
    marker per setting (settings screened out on a subset left out), the chosen one circled and
    the unsteered run marked. tables: {method: sweep table}; chosen: {method: chosen setting}."""
    fig = _figure(figsize=(6.0, 4.4))
    ax = fig.subplots()
    markers = "osD^vP*X"
    unsteered = None
    for i, (method, table) in enumerate(tables.items()):
        rows = [r for r in table[1:] if not r.get("screened_out")]
        unsteered = unsteered or table[0]
        if not rows:
            continue
        ax.scatter([100 * r["benign_helpful"] for r in rows], [100 * r["harmful_refusal"] for r in rows],
                   marker=markers[i % len(markers)], s=30, alpha=0.8, label=method)
        picked = [r for r in rows if r["setting"] == chosen.get(method)]
        if picked:
            ax.scatter([100 * picked[0]["benign_helpful"]], [100 * picked[0]["harmful_refusal"]], s=160,
                       facecolors="none", edgecolors="tab:red", linewidths=1.5)
    if unsteered is not None:
        ax.scatter([100 * unsteered["benign_helpful"]], [100 * unsteered["harmful_refusal"]], marker="s",
                   facecolors="none", edgecolors="k", s=110, label="unsteered")
    ax.set(xlabel="benign helpful (%)", ylabel="harmful refused (%)",
           title="validation trade-off per method (red ring: chosen)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
