"""The paper's experiment end to end, as one typed object: `Experiment(model, items, profile, out).run_all()` ->
`ExperimentResult`.

1. **Calibration**: baseline run with listening signals; Pearson r of each head's audio attention
   with correctness (bootstrap and Fisher-z CIs, a permutation null for the maximum |r| over all
   heads); the top-k heads are the audio specialists, k seeded random heads the paper's control.
2. **Dev**: steering from the specialists for each beta; the best pooled dev accuracy is kept
   (ties go to the smaller beta). Also on dev: the single-layer spread (each layer's direction
   alone) and the method options the paper leaves open (layer convention, head-output steering,
   signal-gated beta), on the focus items (conflicting hints, where items have hints).
3. **Test**: baseline, steered and the seeded control at that beta, with paired statistics
   (exact McNemar, bootstrap CI of the difference clustered by clip); the random-head control as a
   distribution of `n_random_draws` seeded draws, beside the controls that say whether it is the heads or the
   depth (layer-matched, depth-matched from the layers where the audio has arrived, beta-matched;
   `paper.head_controls`); the held-out validity of the listening signal (r of the specialists' mass with
   correctness, dev and test, per condition).

Heads and beta are chosen on calibration and dev only. Runs of the benchmark are resumable
JSON-lines files under `out_dir` (for resuming only: results travel as objects), each bound to a manifest of
what made it (`lens_audio.benchmark.manifest`): resuming under other settings refuses, `fresh` starts each
run file over. The control distribution, the layer spread and the options use `FastSteering` in choice mode
with single-token options (seconds); otherwise real steered runs, one per distinct layer set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lens_audio.analysis.final_position import AudioArrival
from lens_audio.analysis.heads import correlate_heads
from lens_audio.analysis.statistics import max_r_permutation, mcnemar, signal_validity
from lens_audio.analysis.steering.direction import layers_of
from lens_audio.analysis.validity import NoiseSweep, ValidityControls
from lens_audio.benchmark.answer_match import EmbeddingMatch, embedding_match
from lens_audio.benchmark.conflict import ConflictMeasures, conflict_measures
from lens_audio.benchmark.manifest import RunManifest, item_digests, items_digest, run_manifest
from lens_audio.benchmark.parallel import sharded_run
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.benchmark.report import accuracy_with_ci
from lens_audio.benchmark.splits import BenchmarkSplit, publish_split, stage_rows, stage_split
from lens_audio.checks import check_int
from lens_audio.paper.controls import (  # cluster_of: public here, as before
    cluster_of,
    noise_sweep,
    selection_scores,
    specialist_mass,
    top_heads,
    validity_controls,
)
from lens_audio.paper.fast_steering import FastSteering
from lens_audio.paper.head_controls import Controls, arrival_stage, control_distributions, matched_note  # noqa: F401
from lens_audio.paper.profile import ExperimentProfile, record_settings
from lens_audio.paper.results import (
    BetaSweep,
    ExperimentResult,
    HeadSelection,
    LayerSpread,
    RunResult,
    best_beta,
)
from lens_audio.paper.rival_results import run_identity, saved_comparison
from lens_audio.paper.spec import SteeringSpec

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM
    from lens_audio.paper.rivals import RivalComparison

Heads = Sequence[tuple[int, int]]


class Experiment:
    """The experiment's stages over one model, benchmark and output folder; each stage resumes from its run files."""

    def __init__(
        self,
        model: "HookedAudioLM",
        items: Sequence[dict[str, Any]],
        profile: ExperimentProfile,
        out_dir: str | Path,
        progress: bool = True,
        benchmark: str | Path | None = None,
        fresh: bool = False,
        split: BenchmarkSplit | None = None,
    ) -> None:
        """`benchmark` (the items' file) is recorded in the manifests; with `fresh`, each run file this experiment
        opens is started over (once: later stages of the same experiment reuse what earlier ones wrote). `split`
        assigns the items to calibration/dev/test (`benchmark.splits`); without it, a benchmark with none of the
        profile's split values gets a seeded split. A split is said at the start, written to `<out_dir>/split.json`
        and recorded in every manifest (another split refuses to resume)."""
        self.model, self.items, self.profile, self.progress = model, list(items), profile, progress
        # before any work: the specialists and each random draw (from the other heads) need k_heads heads each
        check_int("k_heads", profile.k_heads, 1, model.cfg.n_layers * model.cfg.n_heads // 2)
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.benchmark, self.fresh = None if benchmark is None else str(benchmark), fresh
        self.benchmark_split = stage_split(self.items, profile.splits, split, profile.split_sizes, profile.seed,
                                           profile.split_stratify)
        if self.benchmark_split is not None:
            publish_split(self.benchmark_split, self.out, fresh)
        self._opened: set[Path] = set()
        self._heads: HeadSelection | None = None
        self._fast: dict[str, FastSteering] = {}
        self._baselines: dict[str, RunResult] = {}
        self._arrival: AudioArrival | None = None

    # --- runs ---------------------------------------------------------------------------------------------
    def split(self, name: str) -> list[dict[str, Any]]:
        """The items of stage `name` (calibration, dev, test) or of the benchmark's own split `name` (`stage_rows`)."""
        return stage_rows(self.items, name, self.profile.splits, self.benchmark_split)

    @property
    def split_label(self) -> str | None:
        """The split the manifests record (None: the benchmark's own split field holds the stages)."""
        return None if self.benchmark_split is None else self.benchmark_split.label

    def run(
        self, rows: Sequence[dict[str, Any]], name: str | None, steering=None, listening: bool = False,
        settings: dict[str, Any] | None = None, silence: bool = False, noise_snr_db: float | None = None,
    ) -> RunResult:
        """A run of `rows` in run file `name` (None: in memory); `settings` describe `steering` for its manifest."""
        p = self.profile
        path = None if name is None else self.out / f"{name}.jsonl"
        fresh = self.fresh and path is not None and path not in self._opened
        self._opened.add(path)
        return sharded_run(  # split over the processes of `accelerate launch`, if any
            self.model,
            rows,
            path,
            template=p.prompt,
            mode=p.mode,
            steering=steering,
            batch_size=p.batch_size,
            max_new_tokens=p.max_new_tokens,
            listening=listening,
            progress=self.progress,
            description=name or "steering",
            # the model's fingerprint is taken each run
            settings={"benchmark": self.benchmark, "split": self.split_label, **(settings or {})},
            fresh=fresh,
            silence=silence,
            noise_snr_db=noise_snr_db,
            choice_scoring=p.choice_scoring,
            answer_match=self.answer_match,
        )

    def spec(self, heads: Heads, beta: float, **option) -> SteeringSpec:
        """Steering from `heads` at `beta` under the profile's options (`option` overrides them): the one object
        that reads the steering options (`SteeringSpec`). The gate's specialists come from calibration."""
        p = self.profile.replace(**option)
        return SteeringSpec.from_profile(p, heads, beta, self.select_heads() if p.gate == "signal" else None, self.tag)

    def steered_run(
        self, rows: Sequence[dict[str, Any]], name: str | None, heads: Heads, beta: float, **option
    ) -> RunResult:
        """A run steered from `heads` at `beta` under the profile's options (`option` overrides them), in one pass
        per batch where the mode allows (the spec is the runner's steering object)."""
        spec = self.spec(heads, beta, **option)
        return self.run(rows, name, spec, settings=spec.settings())

    def spec_run(self, split: str, spec: SteeringSpec, role: str | None = None) -> RunResult:
        """`spec`'s run of `split` in its run file (`spec.run_name(split, role)`)."""
        return self.run(self.split(split), spec.run_name(split, role), spec, settings=spec.settings())

    def steering_settings(self, heads: Heads, beta: float, **option) -> dict[str, Any]:
        """The manifest fields of steering from `heads` (`SteeringSpec.settings`)."""
        return self.spec(heads, beta, **option).settings()

    def manifest(self, beta: float | None = None) -> RunManifest:
        """The experiment's manifest: the model, every item's content, the profile's settings, the specialists and
        `beta`."""
        p, specialists = self.profile, self.select_heads().specialists
        digests = {i["id"]: item_digests(i, render_prompt(i, p.prompt)) for i in self.items}
        return run_manifest(
            self.model, p.prompt, p.mode, max_new_tokens=p.max_new_tokens, listening=True, silence=False,
            steering=None, batch_size=p.batch_size, choice_scoring=p.choice_scoring,
            answer_match=None if self.answer_match is None else self.answer_match.label,
            settings={"benchmark": self.benchmark, "split": self.split_label, "heads": specialists,
                      "layers": layers_of(specialists), "k_heads": p.k_heads, "beta": beta, "gate": p.gate,
                      "steering_source": p.steering_source, "layer_convention": p.layer_convention, "seed": p.seed,
                      "items_digest": items_digest(digests), "n_items": len(digests)},
        )

    def clusters(self, split: str) -> list[str]:
        """Each item's clip group in `split` (`cluster_of`): what the bootstrap intervals resample."""
        return [cluster_of(i) for i in self.split(split)]

    def tables(self, run: RunResult, split: str = "test") -> dict[str, Any]:
        """`run`'s accuracy tables with intervals that resample clips where clips repeat (`ci_unit` says which)."""
        return run.tables(self.clusters(split))

    @property
    def tag(self) -> str:
        """Run-name suffix of steered runs whose heads a non-default selection rule chose (so files never mix)."""
        rule = self.profile.selection_rule
        return "" if rule == "r" else f"-{rule}"

    def listen(self, split: str = "calibration") -> RunResult:
        """Baseline run of a split with every item's listening signal (kept in memory once run or resumed)."""
        if split not in self._baselines:
            self._baselines[split] = self.run(self.split(split), f"{split}-baseline", listening=True)
        return self._baselines[split]

    def silence_run(self, split: str) -> RunResult:
        """The split's run with every clip replaced by its silence twin and every item's listening signal
        (`{split}-silence`: one run file shared by the validity controls, the conflict measures and the rivals)."""
        return self.run(self.split(split), f"{split}-silence", listening=True, silence=True)

    @property
    def answer_match(self) -> "EmbeddingMatch | None":
        """The profile's answer matching in generate mode: None (MMAU's string match) or its embedding model's
        nearest option (`benchmark.answer_match`), loaded once."""
        name = self.profile.answer_embedder
        return None if name is None or self.profile.mode != "generate" else embedding_match(name)

    def batches(self, rows: Sequence[dict[str, Any]]) -> list[AudioBatch]:
        """`rows` as batches of the profile's size, each prompt rendered with the profile's template."""
        size, prompt = self.profile.batch_size, self.profile.prompt
        return [self.model.to_batch([i["audio_path"] for i in rows[k : k + size]],
                                    [render_prompt(i, prompt) for i in rows[k : k + size]])
                for k in range(0, len(rows), size)]

    # --- calibration --------------------------------------------------------------------------------------
    def select_heads(self) -> HeadSelection:
        """Correlate calibration listening signals with correctness; pick the specialists and the seeded control."""
        if self._heads is not None:
            return self._heads
        p = self.profile
        run = self.listen("calibration")
        correlation = correlate_heads(
            run.listening,
            run.correct,
            n_bootstrap=p.n_bootstrap // 2,
            seed=p.seed,
            model_name=self.model.cfg.model_name,
            clusters=self.clusters("calibration"),
        )
        scores = selection_scores(self, run)
        specialists = correlation.top_k(p.k_heads) if scores is None else top_heads(scores, p.k_heads, correlation)
        control = correlation.random_heads(p.k_heads, seed=p.seed, exclude=specialists)
        mass = self.specialist_mass(run, specialists)
        reference = float(mass[run.correct].mean()) if run.correct.any() else float(mass.mean())
        null = max_r_permutation(run.listening, run.correct, p.n_permutations, seed=p.seed)
        self._heads = HeadSelection(
            correlation, null, specialists, control, reference, int((~run.correct).sum()), p.selection_rule, scores
        )
        return self._heads

    specialist_mass = staticmethod(specialist_mass)  # `[item]` mean final-token audio mass of the heads

    # --- steering -----------------------------------------------------------------------------------------
    def steering(self, heads: Heads, beta: float, **option) -> SteeringSpec:
        """The runner's steering object for `heads` under the profile's options: the spec (hooks, or one pass)."""
        return self.spec(heads, beta, **option)

    def fast(self, split: str) -> FastSteering | None:
        """The split's fast steering states, or None where the fast path does not apply (generation, multi-token
        options)."""
        rows = self.split(split)
        if not FastSteering.applies(self.model, rows, self.profile.mode):
            return None
        if split not in self._fast:
            heads = split == "dev" or self.profile.steering_source == "head_outputs"
            self._fast[split] = FastSteering.collect(
                self.model, rows, self.profile.prompt, self.profile.batch_size, heads=heads
            )
        return self._fast[split]

    def fast_correct(self, fast: FastSteering, split: str, heads: Heads, beta: float, **option) -> np.ndarray:
        """`[item]` correctness of steering from `heads` at `beta` on `split` by the fast path; `option` overrides the
        profile's."""
        return fast.correct(*self.spec(heads, beta, **option).fast_push(fast, lambda: self.listen(split)))

    def steered_correct(self, split: str, heads: Heads, beta: float, **option) -> np.ndarray:
        """Correctness of steering from `heads`: fast path where it applies, else a real (resumable) run per layer
        set."""
        fast = self.fast(split)
        if fast is not None:
            return self.fast_correct(fast, split, heads, beta, **option)
        spec, own = self.spec(heads, beta, **option), self.spec(self.select_heads().specialists, beta)
        if not option and spec.settings() == own.settings():  # the specialists' own steering: their run, not a twin
            return self.spec_run(split, own, "steered").correct
        return self.spec_run(split, spec).correct  # one run file per option set

    # --- dev ----------------------------------------------------------------------------------------------
    def sweep_beta(self) -> BetaSweep:
        """Dev accuracy of steering from the specialists for each beta (the fast path where it applies, else a real
        steered run per beta); the best (ties: smaller) is kept."""
        specialists = self.select_heads().specialists
        clusters = self.clusters("dev")  # intervals resample clips where clips repeat, as on test (`ci_unit`)
        fast = self.fast("dev")  # one collection for every beta, as the beta-matched draws' sweeps use

        def correct(beta: float) -> np.ndarray:
            if fast is not None:
                return self.fast_correct(fast, "dev", specialists, beta)
            return self.spec_run("dev", self.spec(specialists, beta), "steered").correct

        sweep = {beta: accuracy_with_ci(correct(beta), clusters=clusters) for beta in self.profile.betas}
        return BetaSweep(accuracy_with_ci(self.listen("dev").correct, clusters=clusters), sweep, best_beta(sweep))

    def focus(self, run: RunResult) -> tuple[np.ndarray, str]:
        """Index of the items the controls are measured on (the profile's focus condition where items have hints) and
        its name."""
        conditions = np.array(run.conditions)
        chosen = conditions == self.profile.focus_condition
        return (np.nonzero(chosen)[0], self.profile.focus_condition) if chosen.any() else (np.arange(len(run)), "all")

    def layer_spread(self, beta: float) -> LayerSpread:
        """Dev focus accuracy of steering from each single layer (the check that head selection *can* matter)."""
        index, name = self.focus(self.listen("dev"))
        by_layer = {
            layer: float(
                100 * self.steered_correct("dev", [(layer, 0)], beta, steering_source="residual")[index].mean()
            )
            for layer in range(self.model.cfg.n_layers)
        }
        return LayerSpread(name, beta, by_layer)

    def options(self) -> dict[str, dict[str, float]]:
        """Dev focus accuracy (percent) by beta of the specialists' steering under each method option (fast path
        only)."""
        fast = self.fast("dev")
        if fast is None:
            return {}
        index, _ = self.focus(self.listen("dev"))
        specialists = self.select_heads().specialists
        variants = {
            "profile": {},
            "layer_convention=resid_post": {"layer_convention": "resid_post"},
            "layer_convention=hf_hidden_states": {"layer_convention": "hf_hidden_states"},
            "steering_source=head_outputs": {"steering_source": "head_outputs"},
            "gate=signal": {"gate": "signal"},
        }
        table = {
            name: {
                str(b): float(100 * self.fast_correct(fast, "dev", specialists, b, **o)[index].mean())
                for b in self.profile.betas
            }
            for name, o in variants.items()
        }
        table["baseline"] = {"0": float(100 * self.listen("dev").correct[index].mean())}
        return table

    # --- test ---------------------------------------------------------------------------------------------
    def evaluate(self, beta: float) -> tuple[dict[str, RunResult], dict[str, Any]]:
        """Test runs (baseline, steered, seeded random control) at `beta` and their paired comparisons."""
        selection = self.select_heads()
        test = self.split("test")
        runs = {
            "baseline": self.listen("test"),
            "steered": self.spec_run("test", self.spec(selection.specialists, beta), "steered"),
            "random_control": self.spec_run("test", self.spec(selection.control, beta), "random"),
        }
        clusters = np.array([cluster_of(i) for i in test], dtype=object)
        index, name = self.focus(runs["baseline"])
        paired = {}
        for a, b in (("steered", "baseline"), ("steered", "random_control")):
            for subset, rows in (("all", np.arange(len(test))), (name, index)):
                paired[f"{a} vs {b} ({subset})"] = mcnemar(
                    runs[a].correct[rows],
                    runs[b].correct[rows],
                    list(clusters[rows]),
                    (a, b),
                    self.profile.n_bootstrap,
                    seed=self.profile.seed,
                )
        return runs, paired

    def control_distributions(self, beta: float) -> Controls:
        """The specialists at `beta` against the random-head controls on the test focus items: random, layer-matched,
        depth-matched and beta-matched draws (`paper.head_controls`), with notes for those not drawn."""
        return control_distributions(self, beta)

    def audio_arrival(self) -> AudioArrival:
        """Where the audio reaches the final position, on calibration (`paper.head_controls.arrival_stage`): the
        depth range of the depth-matched control."""
        if self._arrival is None:
            self._arrival = arrival_stage(self, "calibration")
        return self._arrival

    def validity(self) -> dict[str, dict[str, Any]]:
        """r of the specialists' mean final-token audio mass with correctness on dev and test, per hint condition and
        pooled."""
        specialists = self.select_heads().specialists
        table = {}
        for split in ("dev", "test"):
            run = self.listen(split)
            mass, correct, conditions = self.specialist_mass(run, specialists), run.correct, np.array(run.conditions)
            table[split] = {"all": signal_validity(mass, correct)}
            if len(set(conditions)) > 1:
                table[split].update(
                    {
                        c: signal_validity(mass[conditions == c], correct[conditions == c])
                        for c in sorted(set(conditions))
                    }
                )
        return table

    # --- is it listening? -----------------------------------------------------------------------------------
    def validity_controls(
        self, splits: Sequence[str] = ("dev", "test"), n_exact: int = 8
    ) -> dict[str, ValidityControls]:
        """Each split's controls (`evaluation.controls.validity_controls`): r with the silence twin's mass,
        within-stratum r, each head's causal effect (attribution; the specialists and the top `n_exact` exactly),
        the asked clip's share."""
        return {split: validity_controls(self, split, n_exact) for split in splits}

    def noise_sweep(self, snrs: Sequence[float] = (20.0, 10.0, 0.0, -10.0), split: str = "test") -> NoiseSweep:
        """Accuracy and the specialists' signal as white noise is added at each SNR (`evaluation.controls`)."""
        return noise_sweep(self, snrs, split)

    def rivals(self, **grids) -> "RivalComparison":
        """Adaptive steering against its rivals on the same items (`paper.rivals`): chosen on dev, read on test;
        `grids` (alphas, scales, patches, mask_steps, control_draws) narrow the dev grids and the controls."""
        from lens_audio.paper.rivals import compare_rivals

        return compare_rivals(self, **grids)

    def conflict(self, runs: dict[str, RunResult]) -> dict[str, ConflictMeasures]:
        """Text dominance and flip rates (`benchmark.conflict`) of each test run, where the items have conflicting
        hints; the silence flip rate for the baseline, against the `test-silence` run (the validity controls')."""
        items = self.split("test")
        if not any(i.get("hint") == "conflicting" for i in items):
            return {}
        silence = self.silence_run("test")
        return {name: conflict_measures(run.records, items, self.clusters("test"),
                                        silence.records if name == "baseline" else None)
                for name, run in runs.items()}

    def run_all(self) -> ExperimentResult:
        record_settings(self.out, self.model.cfg.model_name, self.benchmark, self.profile, self.split_label)
        selection = self.select_heads()
        dev = self.sweep_beta()
        runs, paired = self.evaluate(dev.best_beta)
        controls = self.control_distributions(dev.best_beta)
        notes = []
        if self.fast("test") is not None:
            real = runs["steered"].correct
            fast = self.steered_correct("test", selection.specialists, dev.best_beta)
            if (real != fast).any():
                notes.append(
                    f"fast path and steered run disagree on {int((real != fast).sum())} test items (float ties)"
                )
        else:
            notes.append(
                "control distribution, layer spread: real steered runs (no fast path in this mode); options not "
                "measured"
            )
        rivals, stale = saved_comparison(self.out, selection.specialists, dev.best_beta,
                                         run_identity(runs["baseline"].records))
        return ExperimentResult(
            model=self.model.cfg.model_name,
            profile=self.profile,
            head_selection=selection,
            dev=dev,
            test={name: self.tables(run) for name, run in runs.items()},
            paired=paired,
            control=controls.random,
            layer_matched_control=controls.layer_matched,
            validity=self.validity(),
            layer_spread=self.layer_spread(dev.best_beta),
            options=self.options(),
            audio_mass=runs["baseline"].listening.mean(0),
            notes=notes + controls.notes + ([stale] if stale else []),
            validity_controls=self.validity_controls(),
            manifest=self.manifest(dev.best_beta),
            depth_matched_control=controls.depth_matched,
            beta_matched_control=controls.beta_matched,
            audio_arrival=self.audio_arrival() if self.profile.depth_matched_control else None,
            conflict=self.conflict(runs),
            rivals=rivals,
        )
