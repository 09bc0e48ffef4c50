"""How strong the evidence of a comparison is, from its per-shape results (``compare``'s ``results.json``):
paired differences with a Wilcoxon signed-rank test, the verdicts and the sentences the article and reports
print about them (who is clearly better, failures, spreads between seeds, the amortisation gap, surprises).

"Clear" needs a paired test over at least :data:`MIN_VERDICT_N` shapes with p < :data:`ALPHA`; seeds of one
shape are averaged first, so three seeds never turn 4 shapes into 12 pairs. Functions take and return data.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from deepsdf_ad.compare import bootstrap_interval
from deepsdf_ad.evaluate import LOWER_IS_BETTER
from deepsdf_ad.models.sources import optimised_source

METRIC_LABELS = {"chamfer_x1e3": "chamfer ×10³", "chamfer_l1": "chamfer-L1", "fscore": "F-score@1%",
                 "normal_consistency": "normal consistency", "iou": "IoU",
                 "near_contour_error": "near-contour error", "code_seconds": "code s/shape",
                 "mesh_seconds": "mesh s/shape"}
"""How a metric is named in sentences and table headers."""


def num(v) -> str:
    """A measured value for the article: 3 significant digits; '–' when missing."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = float(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 1e-4:
        return f"{v:.3g}"
    return f"{v:.2e}"


def paired_difference(res_a: list[dict], res_b: list[dict], metric: str, seed: int = 0) -> dict | None:
    """Mean of (a - b) over the shapes both methods measured, with a bootstrap 95% interval, how often a > b
    and the Wilcoxon signed-rank test's p. Runs are paired by key and seed position, and a shape's
    differences are averaged over its seeds first: the unit is the shape (``n`` distinct shapes; ``seeds``:
    the most seeds any shape was measured with), so three seeds never turn 4 shapes into 12 pairs. None when
    the results carry no per-shape values."""
    a = {(r["key"], r["seed"]): r.get(metric) for r in res_a}
    b = {(r["key"], r["seed"]): r.get(metric) for r in res_b}
    by_shape: dict[str, list[float]] = {}
    for k in a:
        if k in b and a[k] is not None and b[k] is not None and math.isfinite(a[k]) and math.isfinite(b[k]):
            by_shape.setdefault(k[0], []).append(a[k] - b[k])
    if len(by_shape) < 2:
        return None
    d = np.array([np.mean(v) for v in by_shape.values()])
    p = None
    if len(d) >= MIN_VERDICT_N and np.any(d != 0):
        from scipy.stats import wilcoxon

        p = float(wilcoxon(d).pvalue)
    return {"mean": float(d.mean()),
            "ci95": list(bootstrap_interval(d, seed=seed)),
            "a_higher": int((d > 0).sum()), "b_higher": int((d < 0).sum()), "n": len(d), "p": p,
            "seeds": max(len(v) for v in by_shape.values())}


MIN_VERDICT_N = 10
"""A difference is called clear only from a paired Wilcoxon signed-rank test over at least this many shapes
(p < :data:`ALPHA`); with fewer, the article gives the numbers and no verdict."""
ALPHA = 0.05


def paired_verdict(pd: dict | None, metric: str) -> str | None:
    """'clear' when the paired test ``pd`` (:func:`paired_difference`, a - b in ``metric``) has n >=
    :data:`MIN_VERDICT_N`, p < :data:`ALPHA` and its mean on a's better side for ``metric``; 'few' when it
    has fewer pairs (or none); 'unclear' otherwise."""
    if pd is None or pd["n"] < MIN_VERDICT_N or pd.get("p") is None:
        return "few"
    a_better = (pd["mean"] < 0) == (metric in LOWER_IS_BETTER)
    return "clear" if pd["p"] < ALPHA and a_better else "unclear"


def _test_text(pd: dict) -> str:
    seeds = f" (each shape's difference averaged over {pd['seeds']} seeds)" if pd.get("seeds", 1) > 1 else ""
    return f"Wilcoxon signed-rank, paired by shape{seeds}, n = {pd['n']}, p = {pd['p']:.2g}"


def verdict(section: dict, metric: str) -> str:
    """One generated sentence on how clearly the methods differ in ``metric`` in this section."""
    methods = section["methods"]
    stats = {n: m["stats"]["all"].get(metric) for n, m in methods.items()}
    stats = {n: s for n, s in stats.items() if s}
    if len(stats) < 2:
        return ""
    names = sorted(stats, key=lambda n: stats[n]["mean"], reverse=metric not in LOWER_IS_BETTER)
    best = names[0]
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    label = f"{METRIC_LABELS.get(metric, metric)} ({better} is better)"
    parts = []
    for other in names[1:]:
        sb, so = stats[best], stats[other]
        overlap = sb["ci95"][0] <= so["ci95"][1] and so["ci95"][0] <= sb["ci95"][1]
        vs = (f"{best} {num(sb['mean'])} [{num(sb['ci95'][0])}, {num(sb['ci95'][1])}] vs {other} "
              f"{num(so['mean'])} [{num(so['ci95'][0])}, {num(so['ci95'][1])}]")
        pd = paired_difference(methods[best].get("shapes", []), methods[other].get("shapes", []), metric)
        if pd is not None:
            excl = pd["ci95"][0] > 0 or pd["ci95"][1] < 0
            wins = pd["a_higher"] if metric not in LOWER_IS_BETTER else pd["b_higher"]
            paired = (f"paired by shape, {best} − {other} = {num(pd['mean'])} [{num(pd['ci95'][0])}, "
                      f"{num(pd['ci95'][1])}], {best} better on {wins} of {pd['n']}")
        kind = paired_verdict(pd, metric)
        if kind == "clear":
            text = f"{vs}: a clear difference ({_test_text(pd)}; {paired})"
        elif kind == "unclear":
            text = f"{vs}: not a clear difference ({_test_text(pd)}; {paired})"
        else:
            n = 0 if pd is None else pd["n"]
            text = (f"{vs}: {n} paired shapes, fewer than {MIN_VERDICT_N}: no verdict"
                    + ("" if overlap else " (the intervals do not overlap)")
                    + (f" ({paired}{', the paired interval excludes 0' if excl else ''})"
                       if pd is not None else ""))
        if (sb["median"] - so["median"]) * (1 if metric in LOWER_IS_BETTER else -1) > 0 and \
                num(sb["median"]) != num(so["median"]):
            text += (f"; the medians rank them the other way ({best} {num(sb['median'])}, {other} "
                     f"{num(so['median'])}): a few shapes weigh heavily in the means")
        parts.append(text)
    return f"{label}: " + "; ".join(parts) + "."


def amortisation_sentences(section: dict, metric: str) -> list[str]:
    """What refining each encoder's code by optimisation (``compare``'s ``refined`` measurements) changed: the
    amortisation gap in the objective, then the paired tests of the outcome against the plain encoding and
    against each method that optimises from the start."""
    out = []
    for n, ref in section.get("refined", {}).items():
        obj = ref.get("objective")
        if obj:
            out.append(
                f"Amortisation gap of {n} (Cremer et al.: the objective at the encoder's code minus the "
                "objective at the best code its decoder allows, here the code refined by optimisation; the "
                "data term of the test-time loss on all of a shape's observations, each shape averaged over "
                f"its seeds): median {num(obj['encoded']['median'])} at the encoder's code, "
                f"{num(obj['refined']['median'])} refined, over {obj['shapes']} shapes; refining lowered it "
                f"on {obj['lowered']} of {obj['shapes']}, by {num(100 * obj['gap_share_median'])}% of the "
                "encoder's value at the median.")
        label = f"{n} ({ref['mode']})"
        enc = section["methods"].get(n)
        pairs = {f"{n} ({enc['mode']})": enc} if enc else {}
        pairs.update({f"{o} ({m['mode']})": m for o, m in section["methods"].items()
                      if m["mode"] == "optimise"})
        for other, m in pairs.items():
            text = verdict({"methods": {label: ref, other: m}}, metric)
            if text:
                out.append(f"Refined against {other}: {text}")
    return out


def failure_sentence(name: str, measured: dict) -> str:
    """How many of a method's shapes failed in a section, and in which of its runs (seeds): a run in which
    every shape failed is named as broken, since its failures say nothing about the shapes."""
    st = measured["stats"]["all"]
    text = (f"{name}: {st['failed']} of {st['shapes']} shapes failed (no surface or no code); each counts "
            "in the means at the section's worst value (0 for IoU and F-score).")
    by_seed: dict[int, list[int]] = {}  # seed -> [shapes, failed]
    for r in measured.get("shapes", []):
        counts = by_seed.setdefault(r.get("seed", 0), [0, 0])
        counts[0] += 1
        counts[1] += "failed" in r
    if len(by_seed) < 2:
        return text
    text += " By seed: " + ", ".join(f"seed {k}: {f} of {n}" for k, (n, f) in sorted(by_seed.items())) + "."
    broken = [k for k, (n, f) in sorted(by_seed.items()) if n and f == n]
    if broken:
        which = ", ".join(f"seed {k}" for k in broken)
        text += (f" Every shape of {which} failed: that run is broken as a whole (its training curve and "
                 "codes show how), not shape by shape.")
    return text


def seed_means(measured: dict, metric: str) -> dict[int, float]:
    """A method's mean of ``metric`` per seed in one section (from its per-shape records, failures at the
    worst value as in the tables), by seed."""
    by_seed: dict[int, list[float]] = {}
    for r in measured.get("shapes", []):
        v = r.get(metric)
        if v is not None and math.isfinite(v):
            by_seed.setdefault(int(r["seed"]), []).append(float(v))
    return {k: float(np.mean(by_seed[k])) for k in sorted(by_seed)}


def shapes_and_seeds(measured: list[dict]) -> str:
    """The unit of the paired tests over some methods' records: distinct shapes, with the seeds that measured
    each ('240 shapes × 3 seeds'), not the shape-seed records (720)."""
    recs = [r for m in measured for r in m.get("shapes", [])]
    keys = {r["key"] for r in recs}
    seeds = {r["seed"] for r in recs}
    return f"{len(keys)} shapes" + (f" × {len(seeds)} seeds" if len(seeds) > 1 else "")


def seed_spread(section: dict, metric: str) -> str:
    """One sentence on how much the training runs differ: each method's mean of ``metric`` per seed; empty
    with one seed per method."""
    parts = []
    for name, m in section["methods"].items():
        means = list(seed_means(m, metric).values())
        if len(means) > 1:
            parts.append(f"{name} {', '.join(num(x) for x in means)} (spread {num(max(means) - min(means))})")
    if not parts:
        return ""
    label = METRIC_LABELS.get(metric, metric)
    return f"Between training runs: the mean {label} of each seed, " + "; ".join(parts) + "."


def shown_seed_note(section: dict, metric: str) -> str:
    """For a figure that shows each method's first seed: the methods whose first seed is its worst or best
    of three or more by the mean of ``metric``, apart from the others (further from their median than their
    own range, and by more than a quarter), so that a reader does not take one run's look for the method's."""
    lower = metric in LOWER_IS_BETTER
    parts = []
    for name, m in section["methods"].items():
        means = seed_means(m, metric)
        if len(means) < 3:
            continue
        first, *rest = means
        shown, others = means[first], [means[k] for k in rest]
        mid = float(np.median(others))
        if min(others) <= shown <= max(others) or abs(shown - mid) <= max(max(others) - min(others),
                                                                           0.25 * abs(mid)):
            continue
        worst = (shown > mid) == lower
        parts.append(f"{name}'s is its {'worst' if worst else 'best'} of {len(means)} ({num(shown)}; the "
                     f"others {', '.join(num(x) for x in others)})")
    if not parts:
        return ""
    return (f"The seed shown, by the mean {METRIC_LABELS.get(metric, metric)} of this section: "
            + "; ".join(parts) + ".")


def apart(a: list[float] | None, b: list[float] | None) -> bool:
    """Whether two intervals (``[low, high]``, e.g. bootstrap 95% intervals of two means over different
    shapes, which no paired test can compare) do not overlap; False when either is missing."""
    return bool(a) and bool(b) and (a[1] < b[0] or b[1] < a[0])


def with_refined(section: dict) -> dict:
    """``section`` with each encoder's refined codes (``compare``'s ``refined``) as one more method, named
    ``NAME (MODE)``, so that a winner is looked for among all the ways a code was found."""
    methods = dict(section["methods"])
    methods.update({f"{n} ({r['mode']})": r for n, r in section.get("refined", {}).items()})
    return {**section, "methods": methods}


def surprises(results: dict, metric: str, test_steps: Callable[[str], int | None]) -> list[str]:
    """Notes where a method's own sections rank against expectation: training shapes worse than held-out
    ones, or out-of-distribution shapes better than held-out ones, each only where the two means' bootstrap
    intervals do not overlap (the sections hold different shapes, so no paired test applies; an overlap is
    noise). ``test_steps(method)``: its test-time optimisation steps (None: unknown), for the explanation of
    an autodecoder's under-fitted training codes."""
    secs = results["sections"]
    out = []
    lower = metric in LOWER_IS_BETTER
    label = METRIC_LABELS[metric]

    def stat(sec: str, name: str) -> dict:
        m = secs.get(sec, {}).get("methods", {}).get(name, {})
        return m.get("stats", {}).get("all", {}).get(metric) or {}

    for name, m in results["methods"].items():
        rep, rec, ood = stat("representation", name), stat("reconstruction", name), stat("ood", name)
        if rep and rec and (rep["mean"] > rec["mean"] if lower else rep["mean"] < rec["mean"]) and \
                apart(rep.get("ci95"), rec.get("ci95")):
            text = (f"Surprising: {name} scores its training shapes worse ({label} {num(rep['mean'])}) than "
                    f"held-out ones ({num(rec['mean'])}), beyond both intervals.")
            if optimised_source(m["latent_source"]):
                steps = test_steps(name)
                text += (f" Its training codes are under-fitted: each gets a gradient once per epoch "
                         f"({results['fair']['train.epochs']} times in all), while a held-out code gets "
                         f"{'' if steps is None else f'{steps} '}optimisation steps of its own.")
            out.append(text)
        if ood and rec and (ood["mean"] < rec["mean"] if lower else ood["mean"] > rec["mean"]) and \
                apart(ood.get("ci95"), rec.get("ci95")):
            out.append(f"Surprising: {name} scores the out-of-distribution shapes better ({label} "
                       f"{num(ood['mean'])}) than held-out shapes of the trained classes "
                       f"({num(rec['mean'])}). With {secs['ood']['methods'][name]['stats']['all']['shapes']} "
                       "such shapes this may say more about which shapes were drawn (some are easier to fit) "
                       "than about generalisation.")
    return out


def clear_winner(section: dict, metric: str) -> str | None:
    """The method clearly better in ``metric`` than every other (:func:`paired_verdict`: a paired Wilcoxon
    test over at least :data:`MIN_VERDICT_N` shapes, p < :data:`ALPHA`), if any."""
    methods = section["methods"]
    names = [n for n, m in methods.items() if m["stats"]["all"].get(metric)]
    for n in names:
        others = [o for o in names if o != n]
        ok = bool(others)
        for o in others:
            pd = paired_difference(methods[n].get("shapes", []), methods[o].get("shapes", []), metric)
            ok = ok and paired_verdict(pd, metric) == "clear"
        if ok:
            return n
    return None
