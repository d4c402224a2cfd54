"""Adaptive steering against its 2026 rivals, on the same items: each method's setting chosen on dev (focus items,
ties: the first in its grid), read once on test, with paired statistics against the baseline (on the focus items and
on the other items: what it gains where the text conflicts, and what it costs elsewhere) and against adaptive
steering on the focus items (exact McNemar, bootstrap CI clustered by clip), accuracy by hint condition, text
dominance and flip rates (`benchmark.conflict`), and its cost in forwards per item.

    comparison = experiment.rivals()      # or: lens-audio rivals (the experiment's flags and --out)
    print(comparison.describe())

The methods (`paper.interventions`): the paper's direction fixed (averaged once over up to 200 calibration
items at the specialists' layers; beta on dev), audio-contrastive correction (alpha on dev), back-patching (source
and target layers on dev), attention scaling toward the audio in the specialists (scale on dev), and a head mask
trained on calibration items (AHAMask's recipe, `analysis.head_mask`; its training length on dev); each of the last
two has a control distribution of seeded draws of as many random heads, none of its own, at its dev-chosen setting
(`controls`: its percentile among them; the table's row is the median draw); adaptive steering is the experiment's
own (beta on dev).
In generate mode (`--mode generate`) every method decodes greedily: audio-contrastive correction contrasts the
next-token log-probabilities of the audio and silence rows at every step (contrastive decoding), the others' hooks
act on the prompt and on every decoding step; the head mask is trained on the options' first tokens either way.
Run files: `{split}-rival-{method}-{setting}.jsonl` beside the experiment's; the trained masks in
`calibration-head-mask.json` (reused while the model, the calibration items and the training settings are the same);
the comparison in `rivals.json`, which the experiment's result then carries (`figures` shows it in the report).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lens_audio.analysis.head_mask import HeadMaskTraining, train_head_mask
from lens_audio.analysis.statistics import ControlDistribution, control_distribution, mcnemar, random_head_draws
from lens_audio.analysis.steering.direction import FixedDirection, layers_of
from lens_audio.benchmark.conflict import conflict_measures
from lens_audio.benchmark.fingerprint import model_fingerprint
from lens_audio.benchmark.manifest import installed_versions, item_digests, items_digest, prompt_name
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.files import write_atomically
from lens_audio.paper import controls
from lens_audio.paper.interventions import (
    AudioAttentionScale,
    BackPatch,
    ContrastiveCorrection,
    FixedSteering,
    HeadMask,
)
from lens_audio.paper.rival_results import (  # noqa: F401
    SAVED,
    VERDICT_RULE,
    RivalComparison,
    RivalResult,
    paired_key,
    run_identity,
    verdict,
)

if TYPE_CHECKING:
    from lens_audio.paper.experiment import Experiment

ALPHAS = (0.5, 1.0, 2.0)
FIXED_ITEMS = 200  # calibration items the fixed direction is averaged over
SCALES = (1.5, 2.0, 4.0)
MASK_STEPS = (50, 100, 200)  # the trained head mask after these many steps (training runs to the last)
MASK_LEARNING_RATE = 0.1
CONTROL_DRAWS = 20  # random draws of heads: the control distribution of attention scaling and of the head mask
MASK_INIT = 3.0  # every head's logit at the start: kept, and dropped by the noise about 5% of the time


def back_patch_grid(n_layers: int) -> list[BackPatch]:
    """Late sources (the last layer and three quarters down) into early targets (a quarter and half way)."""
    sources = sorted({n_layers - 1, (3 * n_layers) // 4})
    targets = sorted({n_layers // 4, n_layers // 2})
    return [BackPatch(s, t) for s in sources for t in targets if t < s]


def _name(intervention: Any) -> str:
    """A run-file name: the method, whose heads (attention scaling), and the setting, e.g. `back-patching-L7-L4`."""
    settings = intervention.settings()
    parts = [settings["method"], *([settings["role"]] if "role" in settings else [])]
    setting = re.sub(r"[^A-Za-z0-9.]+", "-", intervention.label).strip("-")
    return "-".join([*parts, setting])


def mask_checkpoints(steps: Sequence[int]) -> list[int]:
    """The trained mask's lengths, sorted, each once; refused when there is none or one is not a positive integer."""
    checkpoints = sorted({int(s) for s in steps})
    if not checkpoints or checkpoints[0] < 1 or any(int(s) != s for s in steps):
        raise ValueError(f"mask_steps must be positive whole numbers of training steps (e.g. 50 100 200), not "
                         f"{list(steps)!r}.")
    return checkpoints


def trained_head_mask(e: "Experiment", checkpoints: Sequence[int], notes: list[str]) -> HeadMaskTraining:
    """The head masks trained on `e`'s calibration items (those whose options have distinct first tokens; the others
    are said in `notes`) up to the last of `checkpoints`; read back from `calibration-head-mask.json` when the model,
    the items' content, the settings and the package's version are these (`e.fresh` trains anew)."""
    rows = e.split("calibration")
    kept, skipped = controls.distinct_first_tokens(e, rows)
    if skipped:
        notes.append(controls.skipped_note(skipped, len(rows), "the head mask's training"))
    rows = [rows[i] for i in kept]
    if not rows:
        raise ValueError("no calibration item has options with distinct first tokens; the head mask's loss compares "
                         "first tokens")
    prompt, versions = e.profile.prompt, installed_versions()
    digests = {i["id"]: item_digests(i, render_prompt(i, prompt)) for i in rows}
    settings = {"model": model_fingerprint(e.model), "items": items_digest(digests), "n_items": len(rows),
                "checkpoints": list(checkpoints), "learning_rate": MASK_LEARNING_RATE, "init": MASK_INIT,
                "seed": e.profile.seed, "prompt": prompt_name(prompt), "batch_size": e.profile.batch_size,
                "device": e.model.device.type, "versions": {k: versions[k] for k in ("lens_audio", "torch")}}
    path = e.out / "calibration-head-mask.json"
    if path.is_file() and not e.fresh:
        try:
            saved = json.loads(path.read_text())
            if saved.get("settings") == settings:
                return HeadMaskTraining.from_json(saved["training"])
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: trained again and written over
    training = train_head_mask(e.model, list(controls.batches(e, rows)), checkpoints[-1], checkpoints,
                               MASK_LEARNING_RATE, MASK_INIT, seed=e.profile.seed, progress=e.progress)
    write_atomically(path, json.dumps({"settings": settings, "training": training.to_json()}, indent=1))
    return training


def compare_rivals(e: "Experiment", alphas: Sequence[float] = ALPHAS, scales: Sequence[float] = SCALES,
                   patches: Sequence[BackPatch] | None = None, mask_steps: Sequence[int] = MASK_STEPS,
                   control_draws: int = CONTROL_DRAWS) -> RivalComparison:
    """The comparison on `e`'s dev and test splits (see the module docstring); `alphas`, `scales`, `patches`
    (default `back_patch_grid`) and `mask_steps` (the trained mask's lengths) are the dev grids: one dev run per
    setting; `control_draws` random draws of as many heads are the control of attention scaling and of the head mask
    (one test run each)."""
    checkpoints = mask_checkpoints(mask_steps)  # before any run
    if int(control_draws) != control_draws or control_draws < 1:
        raise ValueError(f"control_draws must be a whole number of random draws >= 1, not {control_draws!r}.")
    selection = e.select_heads()
    beta = e.sweep_beta().best_beta
    dev_index, focus = e.focus(e.listen("dev"))
    test_index, _ = e.focus(e.listen("test"))
    test_items = e.split("test")
    clusters = np.array(e.clusters("test"), dtype=object)

    def run(split: str, intervention: Any):
        described = getattr(intervention, "manifest_fields", None)  # else the runner describes the dataclass
        return e.run(e.split(split), f"{split}-rival-{_name(intervention)}", intervention,
                     settings=described() if described else None)

    def choose(grid: Sequence[Any]) -> tuple[Any, dict[str, float]]:
        dev = {g.label: float(100 * run("dev", g).correct[dev_index].mean()) for g in grid}
        best = max(range(len(grid)), key=lambda i: (dev[grid[i].label], -i))  # ties: the first in the grid
        return grid[best], dev

    methods: list[tuple[str, Any, dict[str, float], Any, int]] = []
    steered = e.spec_run("test", e.spec(selection.specialists, beta), "steered")
    methods.append(("adaptive steering (specialists)", f"beta {beta:g}", {}, steered, 2))
    calibration = e.split("calibration")[:FIXED_ITEMS]  # the fixed direction: averaged once, on calibration
    fixed = FixedDirection.from_batches(e.model, e.batches(calibration), layers_of(selection.specialists), 1.0)
    steer, dev = choose([FixedSteering(dataclasses.replace(fixed, beta=float(b))) for b in e.profile.betas])
    methods.append(("fixed direction (specialists' layers)", steer.label, dev, run("test", steer), 1))
    contrastive, dev = choose([ContrastiveCorrection(a) for a in alphas])
    methods.append(("audio-contrastive correction", contrastive.label, dev, run("test", contrastive), 2))
    grid = list(patches) if patches is not None else back_patch_grid(e.model.cfg.n_layers)
    notes = []
    if grid:
        patch, dev = choose(grid)
        methods.append(("back-patching", patch.label, dev, run("test", patch), 2))
    else:
        notes.append(f"back-patching not run: {e.model.cfg.n_layers} layers leave no late source above an early "
                     "target")
    controls: dict[str, ControlDistribution] = {}

    def random_control(method: str, row: str, chosen, make, owner: str) -> None:
        """`control_draws` test runs of `make(heads, draw)` on as many random heads as `chosen` has, none of its own:
        the chosen method's percentile among them (`controls[method]`), and the median draw's row."""
        cfg, k = e.model.cfg, len(chosen.heads)
        draws = random_head_draws(cfg.n_layers, cfg.n_heads, k, control_draws, e.profile.seed, exclude=chosen.heads)
        drawn = [run("test", make(tuple(sorted(d)), i)) for i, d in enumerate(draws)]
        ours = next(m[3] for m in methods if m[0] == method)
        control = controls[method] = control_distribution(
            ours.correct[test_index], np.stack([r.correct[test_index] for r in drawn]), draws,
            list(clusters[test_index]), items=focus, seed=e.profile.seed, kind="random")
        methods.append((row, f"{k} heads, median of {control_draws} draws", {}, drawn[control.median_draw], 1))
        notes.append(f"{row}: {control_draws} draws of {k} heads, none of {owner} heads, with the profile's seed, at "
                     f"{owner} dev-chosen setting: a control, not tuned; the row is the draw of median {focus} "
                     f"accuracy; {control.describe(method)}")

    scale, dev = choose([AudioAttentionScale(tuple(selection.specialists), s) for s in scales])
    methods.append(("attention scaling (specialists)", scale.label, dev, run("test", scale), 1))
    random_control("attention scaling (specialists)", "attention scaling (random heads)", scale,
                   lambda heads, i: AudioAttentionScale(heads, scale.scale, role=f"random-heads-draw-{i}"),
                   "the specialists'")
    training = trained_head_mask(e, checkpoints, notes)
    mask, dev = choose([HeadMask(training.masked[s], f"step {s}") for s in checkpoints])
    methods.append(("head mask (trained)", f"{mask.label}: {len(mask.heads)} heads", dev, run("test", mask), 1))
    if mask.heads:
        random_control("head mask (trained)", "head mask (random heads)", mask,
                       lambda heads, i: HeadMask(heads, f"{len(heads)} heads draw {i}", role="random-heads"),
                       "the trained mask's")
    else:
        notes.append("the trained mask chosen on dev switches no head off: it is the baseline, and has no random "
                     "control")

    baseline = e.listen("test")
    silence = e.silence_run("test")
    has_hints = any(i.get("hint") == "conflicting" for i in test_items)
    rest = np.setdiff1d(np.arange(len(test_items)), test_index)  # what a method may cost elsewhere
    results = []
    for method, setting, dev, test_run, forwards in methods:
        paired = {}
        for other_name, other in (("baseline", baseline), ("adaptive steering", steered)):
            if other is test_run:
                continue
            for subset, rows in ((focus, test_index), ("other", rest)):
                if not len(rows) or (subset == "other" and other_name != "baseline"):
                    continue
                paired[paired_key(method, other_name, subset)] = mcnemar(
                    test_run.correct[rows], other.correct[rows], list(clusters[rows]), (method, other_name),
                    e.profile.n_bootstrap, seed=e.profile.seed)
        conflict = conflict_measures(test_run.records, test_items, list(clusters)) if has_hints else None
        results.append(RivalResult(method, setting, dev, e.tables(test_run), conflict, forwards, paired))
    base_conflict = (conflict_measures(baseline.records, test_items, list(clusters), silence.records)
                     if has_hints else None)
    results.insert(0, RivalResult("baseline", "", {}, e.tables(baseline), base_conflict, 1, {}))
    comparison = RivalComparison(focus, results, notes, [tuple(h) for h in selection.specialists], beta,
                                 run_identity(baseline.records), controls)
    write_atomically(e.out / SAVED, json.dumps(comparison.to_json(), indent=1))  # the report shows it (`figures`)
    return comparison
