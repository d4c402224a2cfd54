"""Where does the steering effect live? Sweeps over direction layers, injection sites and head-level directions.

All on a given split (use dev: choices made here must not look at test):

- `layer_grid`: for each source layer L the per-input direction
  resid_post[L](audio) - resid_post[L](silence), injected either at the
  final representation (the paper's site) or back at layer L, for each beta;
- `head_directions`: the direction built from the specialist heads' own
  outputs (sum over heads of hook_result(audio) - hook_result(silence) at the
  final position) instead of whole-layer residuals.

Each cell is the accuracy on the items given (e.g. the conflicting items).

`lens-audio locate` runs them on an experiment's dev focus items and writes locate.json (`write_locate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lens_audio.analysis.steering.direction import adaptive_direction, head_output_direction, steering_hooks
from lens_audio.benchmark.report import accuracy_with_ci
from lens_audio.benchmark.runner import run_benchmark
from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM
    from lens_audio.paper.experiment import Experiment


def _accuracy(model, items, steering, template, mode, batch_size) -> float:
    records = run_benchmark(
        model,
        items,
        None,
        template=template,
        mode=mode,
        steering=steering,
        batch_size=batch_size,
        listening=False,
        progress=False,
    )
    return accuracy_with_ci([r["correct"] for r in records])["accuracy"]


def layer_grid(
    model: HookedAudioLM,
    items: Sequence[dict[str, Any]],
    betas: Sequence[float],
    template: str | Callable = "instruct",
    mode: str = "choice",
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Accuracy for every (source layer, injection site, beta)."""
    final = model.cfg.n_layers - 1
    rows = [
        {
            "source_layer": None,
            "site": None,
            "beta": 0.0,
            "accuracy": _accuracy(model, items, None, template, mode, batch_size),
        }
    ]
    for layer in range(model.cfg.n_layers):
        for site_name, site_layer in (("final", final), ("same layer", layer)):
            if site_name == "same layer" and layer == final:
                continue
            for beta in betas:
                def steering(m, batch, start, layer=layer, beta=beta, site_layer=site_layer):
                    return steering_hooks(
                        m,
                        adaptive_direction(m, batch, [layer]),
                        beta,
                        block_hook_name(site_layer, "hook_resid_post"),
                        start,
                    )

                rows.append(
                    {
                        "source_layer": layer,
                        "site": site_name,
                        "beta": beta,
                        "accuracy": _accuracy(model, items, steering, template, mode, batch_size),
                    }
                )
    return rows


def head_directions(
    model: HookedAudioLM, items: Sequence[dict[str, Any]], heads: Sequence[tuple[int, int]], betas: Sequence[float],
    template: str | Callable = "instruct", mode: str = "choice", batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Accuracy when steering the final representation with the specialist heads' own output difference."""
    rows = []
    for beta in betas:
        def steering(m, batch, start, beta=beta):
            return steering_hooks(m, head_output_direction(m, batch, heads), beta, None, start)

        rows.append(
            {
                "heads": [list(h) for h in heads],
                "beta": beta,
                "accuracy": _accuracy(model, items, steering, template, mode, batch_size),
            }
        )
    return rows


def locate(experiment: "Experiment", betas: Sequence[float] = (1.0, 2.0, 4.0)) -> dict[str, Any]:
    """The sweeps on the experiment's dev focus items, with its own heads (k from its profile) and prompt."""
    selection, p = experiment.select_heads(), experiment.profile
    dev = experiment.split("dev")
    focus = [i for i in dev if i.get("hint") == p.focus_condition] or dev
    kwargs = dict(template=p.prompt, mode=p.mode, batch_size=p.batch_size)
    return {
        "items": f"dev split, {p.focus_condition if focus is not dev else 'all'} items",
        "layer_grid": layer_grid(experiment.model, focus, betas, **kwargs),
        "specialist_head_outputs": head_directions(
            experiment.model, focus, selection.specialists, tuple(betas) + (8.0,), **kwargs
        ),
        "control_head_outputs": head_directions(
            experiment.model, focus, selection.control, tuple(betas) + (8.0,), **kwargs
        ),
    }


def write_locate(experiment: Experiment, betas: Sequence[float] = (1.0, 2.0, 4.0)) -> dict[str, Any]:
    """`locate(experiment, betas)`, also written to the experiment's folder as locate.json (`lens-audio locate`)."""
    import json

    from lens_audio.files import write_atomically

    result = locate(experiment, betas)
    write_atomically(experiment.out / "locate.json", json.dumps(result, indent=1))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lens_audio.paper.locate [--model M] [--benchmark B] [--out DIR] [--betas ...]`: the old spelling of
    `lens-audio locate` (which also takes --device, --dtype, --device-map, ...), kept for one release: the same
    sweeps (`write_locate`) to DIR/locate.json, printed. DIR is the experiment's run folder (default
    `runs/experiment`, as `lens-audio experiment`): the calibration run there is reused, or computed if missing.

    The command line itself is `lens_audio.cli.experiment` (this package sits below the CLI, so it does not import
    it); this parses the four old flags and says once on stderr that the command has moved.
    """
    import json
    import sys

    from lens_audio.benchmark.mmau import load_mmau
    from lens_audio.checks import OneLineParser, cli_float, output_folder
    from lens_audio.model.hooked_audio_lm import HookedAudioLM
    from lens_audio.model.registry import bundled_benchmark
    from lens_audio.paper.experiment import Experiment
    from lens_audio.paper.profile import profile_for

    parser = OneLineParser(prog="python -m lens_audio.paper.locate", description="Deprecated: use `lens-audio locate`.")
    parser.add_argument("--model", default="workshop")
    parser.add_argument("--benchmark")
    parser.add_argument("--out", default="runs/experiment", type=output_folder)
    parser.add_argument("--betas", type=cli_float(), nargs="+", default=[1.0, 2.0, 4.0])
    args = parser.parse_args(argv)
    print("note: `python -m lens_audio.paper.locate` is now `lens-audio locate` (same flags); this spelling goes in "
          "the next release.", file=sys.stderr)
    benchmark = args.benchmark or bundled_benchmark(args.model)
    experiment = Experiment(
        HookedAudioLM.from_pretrained(args.model), load_mmau(benchmark), profile_for(args.model), args.out,
        benchmark=benchmark,
    )
    print(json.dumps(write_locate(experiment, args.betas), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
