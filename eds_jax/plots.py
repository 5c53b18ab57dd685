"""PNG figures: validation AUC per layer and energy histograms (training), rates per set (evaluation)."""
from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_layer_quality(path: str, layers, auc, sign_accuracy, chosen) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(layers)), 3.5))
    colours = ["tab:orange" if layer in chosen else "tab:blue" for layer in layers]
    ax.bar(layers, auc, color=colours, label="validation AUC (orange: chosen)")
    ax.plot(layers, sign_accuracy, "k.", label="sign accuracy (upstream)")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="layer (input of block)", ylabel="best-epoch score", ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_energy_histograms(path: str, layers, energy_good, energy_bad) -> None:
    """energy_good/bad: per chosen layer, validation energies of good and bad states."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 2.8), squeeze=False)
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
    plt.close(fig)


def plot_eval_rates(path: str, results: dict) -> None:
    """Per evaluation set, one stacked bar per method: helpful / refusal / incoherent (they sum to
    100%), with the bootstrap 95% interval of the set's metric (helpful or refusal)."""
    plt = _pyplot()
    names = list(results)
    methods = list(dict.fromkeys(m for r in results.values() for m in r["methods"]))
    colours = {"helpful": "tab:green", "refusal": "tab:blue", "incoherent": "tab:red"}
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(7, 1.5 * len(names) * max(1, len(methods) / 3)), 4.2))
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
    plt.close(fig)


def plot_tradeoff(path: str, table, chosen: str) -> None:
    """The sweep's trade-off: benign helpful vs harmful refused, one point per setting, coloured
    by incoherence; the unsteered run and the chosen setting marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    x = [100 * r["benign_helpful"] for r in table]
    y = [100 * r["harmful_refusal"] for r in table]
    c = [100 * r["incoherent"] for r in table]
    points = ax.scatter(x, y, c=c, cmap="viridis_r", s=36, zorder=2)
    fig.colorbar(points, ax=ax, label="incoherent (%)")
    for r, xi, yi in zip(table, x, y):
        label = r["setting"].replace("layers=", "L").replace("num_steps=", "s")
        weight = "bold" if r["setting"] == chosen else "normal"
        ax.annotate(label if r["setting"] in (chosen, table[0]["setting"]) or len(table) <= 8
                    else f"{r.get('eta', r.get('eta_fraction', r.get('coeff', '')))}", (xi, yi), fontsize=6,
                    fontweight=weight, xytext=(3, 3), textcoords="offset points")
    ax.scatter([x[0]], [y[0]], marker="s", facecolors="none", edgecolors="k", s=90, label="unsteered")
    chosen_index = [r["setting"] for r in table].index(chosen)
    ax.scatter([x[chosen_index]], [y[chosen_index]], marker="*", color="tab:red", s=140, zorder=3,
               label="chosen")
    ax.set(xlabel="benign helpful (%)", ylabel="harmful refused (%)",
           title="steering settings on validation prompts")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
