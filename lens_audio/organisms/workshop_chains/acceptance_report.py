"""How the clip-chain organism's acceptance checks are written out: as strict JSON (`JsonFields`, the typed
results' `to_json` / `from_json`) and as a table (`format_acceptance`, `AcceptanceChecks.format()`: one row per
layer with the patching restore, the probe and the steering per beta, then the top heads' validity, the verdicts,
timings and notes).

Kept apart from `acceptance` (the rules, the typed results and the checks), which it reads only through the
`AcceptanceChecks` it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from lens_audio.paper.results import head_label

if TYPE_CHECKING:
    from lens_audio.organisms.workshop_chains.acceptance import AcceptanceChecks


class JsonFields:
    """`to_json`: the fields with NaN as None (strict JSON) and tuples as lists; `from_json` restores each field by
    its annotation (None as NaN in `float` and `list[float]` fields, a list as a tuple in `tuple` ones)."""

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]):
        restore = {"float": _nan, "list[float]": _floats, "list[list[float]]": lambda v: [_floats(r) for r in v],
                   "tuple[int, int]": tuple}
        return cls(**{f.name: restore.get(f.type, lambda v: v)(data[f.name]) for f in fields(cls)})


def format_acceptance(checks: AcceptanceChecks, strata: Sequence[str]) -> str:
    """A readable report: one row per layer (patching, probe, steering per beta), then validity and verdicts.

    A `!` marks a cell that breaks its check's rule."""
    r, e, late = checks.rules, checks.early_below, checks.late_from
    p, pr, st, v = checks.patching, checks.probe, checks.steering, checks.validity
    subset = f"{checks.n_items} of {checks.n_split} items, even over {' x '.join(strata)}" if checks.limit else (
        f"{checks.n_items} items")
    lines = [
        f"acceptance checks: {checks.model}, split {checks.split} ({subset}); {checks.n_layers} layers, "
        f"early = layers < {e}, late = layers >= {late}",
        f"  patching on {p.items} (n={p.n}): audio {_pct(p.audio)}, silence {_pct(p.silence)} "
        f"(early <= {_pct(p.early_limit)}, late >= {_pct(p.late_limit)})",
        f"  probe on {pr.items} (n={pr.n}), {pr.folds} folds by clip set ({pr.n_groups} sets), "
        f"chance {_pct(pr.chance)}, l2 from {', '.join(f'{v:g}' for v in pr.l2)} by nested CV "
        f"(early <= {r.probe_early_max:g}%)",
        f"  steering on {st.items} (n={st.n}): baseline {_pct(st.baseline)} (early within "
        f"+-{r.steer_early_tolerance:g}, late >= +{r.steer_late_gain:g} points)",
        "",
    ]
    header = ["layer", "patched", "probe"] + [f"steer b={b:g}" for b in st.betas]
    rows = [["emb", "", _cell(pr.by_point[0], 0 < e and not pr.by_point[0] <= r.probe_early_max)]
            + [""] * len(st.betas)]
    for layer in range(checks.n_layers):
        early, is_late = layer < e, layer >= late
        patched = p.by_layer[layer]
        bad_patch = (early and not patched <= p.early_limit) or (is_late and not patched >= p.late_limit)
        probe = pr.by_point[layer + 1]
        row = [str(layer), _cell(patched, bad_patch), _cell(probe, early and not probe <= r.probe_early_max)]
        for values in st.by_beta:
            gain = values[layer] - st.baseline
            bad = (early and not abs(gain) <= r.steer_early_tolerance) or (
                is_late and not gain >= r.steer_late_gain)
            row.append(_cell(values[layer], bad))
        rows.append(row)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
    lines += [
        "",
        f"  validity: top {len(v.heads)} heads by |r| on calibration's {v.selection_items} (n={v.n_selection}), "
        f"measured on {v.items} (n={v.n}, {v.n_clusters} clip sets)",
        "    head     r(cal)   r   r within  r silence  mass audio  mass silence",
    ]
    for h in v.heads:
        lines.append(f"    {head_label(h.head):7s} {_r(h.r_calibration):>6s} {_r(h.r):>6s} {_r(h.r_within):>8s} "
                     f"{_r(h.r_silence):>9s}  {h.mass_audio:10.3f}  {h.mass_silence:12.3f}")
    lines.append(f"    signal (mean mass, signed by calibration r): r {v.signal.describe()}, within domains "
                 f"{v.within.describe()} (>= {r.within_r_min:g}), silence twin {v.silence.describe()} "
                 f"(<= {r.silence_r_max:g})")
    if v.within_relation is not None:
        lines.append(f"    (not a rule) signal r within question kinds (direct / after / before): "
                     f"{v.within_relation.describe()}")
    lines.append("")
    verdicts = ", ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in checks.passed.items())
    passing = [f"{b:g}" for b, ok in zip(st.betas, st.passed_by_beta) if ok]
    lines.append(f"  {verdicts}" + (f" (steering passes at beta {', '.join(passing)})" if passing else ""))
    if checks.seconds:
        lines.append("  seconds: " + ", ".join(f"{k} {s:.0f}" for k, s in checks.seconds.items()))
    lines += [f"  note: {note}" for note in checks.notes]
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1f}%"


def _cell(value: float, bad: bool) -> str:
    return ("n/a" if not math.isfinite(value) else f"{value:.1f}") + ("!" if bad else " ")


def _r(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2f}"


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _floats(values: Sequence[float | None]) -> list[float]:
    return [_nan(v) for v in values]


def _jsonable(value: Any) -> Any:
    """NaN as None (strict JSON), tuples as lists, recursively."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
