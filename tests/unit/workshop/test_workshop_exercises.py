"""The workshop checkers (`lens_audio.workshop.exercises`) pass a right answer and explain the usual wrong ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.analysis.steering import layers_of
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.model.hook_point import block_hook_name
from lens_audio.organisms import BENCHMARK
from lens_audio.workshop.exercises import session1, session2, session3


@pytest.fixture(scope="module")
def model():
    return HookedAudioLM.from_pretrained("workshop")


@pytest.fixture(scope="module")
def items():
    return load_mmau(BENCHMARK)


@pytest.fixture(scope="module")
def batch(model, items):
    chosen = [i for i in items if i["split"] == "dev"][:4]
    return model.to_batch([i["audio_path"] for i in chosen], [render_prompt(i, "workshop") for i in chosen])


@pytest.fixture(scope="module")
def four(items):
    return [i for i in items if i["split"] == "dev"][:4]


def differs_at_one_place(function, index):
    """A wrong answer that differs from `function`'s only at `index` (by 0.25): the message must point there."""
    def wrong(*args):
        out = function(*args).clone()
        out[index] += 0.25
        return out
    return wrong


def fails(check, *args, match: str):
    with pytest.raises(AssertionError, match=match):
        check(*args)


# ---------------------------------------------------------------- session 1


def clip_token_mask(ids, audio_token_id, clip):
    is_audio = ids == audio_token_id
    starts = is_audio & ~torch.cat([torch.tensor([False]), is_audio[:-1]])
    return is_audio & (starts.cumsum(0) == clip)


def test_clip_token_mask(batch, model):
    session1.test_clip_token_mask(clip_token_mask, batch, model.cfg.audio_token_id)
    fails(session1.test_clip_token_mask, lambda ids, a, clip: clip_token_mask(ids, a, clip + 1), batch,
          model.cfg.audio_token_id, match="clips count from 1")
    fails(session1.test_clip_token_mask, lambda ids, a, clip: ids == a, batch, model.cfg.audio_token_id,
          match="every clip's audio tokens")
    fails(session1.test_clip_token_mask, lambda ids, a, clip: ..., batch, model.cfg.audio_token_id,
          match="replace the `...  # TODO`")


def option_logits(logits, final, option_ids):
    return logits[torch.arange(len(final)), final].gather(1, option_ids)


def test_option_logits(model, items):
    chosen = [i for i in items if i["split"] == "test"][:3]
    session1.test_option_logits(option_logits, model, chosen)
    fails(session1.test_option_logits, lambda logits, final, ids: logits[:, -1].gather(1, ids), model, chosen,
          match="position -1")
    fails(session1.test_option_logits, lambda logits, f, ids: option_logits(logits, f, ids).softmax(-1), model,
          chosen, match="probabilities")
    fails(session1.test_option_logits, lambda logits, final, ids: logits[:, final].gather(1, ids), model, chosen,
          match=r"option_logits raised RuntimeError.*should return shape \(3, 4\).*`logits\[:, final\]` pairs")
    fails(session1.test_option_logits, differs_at_one_place(option_logits, (1, 2)), model, chosen, match="item 1")


def silence_clip_hook(clip, silent_embeds):
    def hook(embeds, hook):
        embeds = embeds.clone()
        embeds[clip - 1] = silent_embeds[clip - 1]
        return embeds

    return hook


def test_silence_clip_hook(model, items):
    item = items[0]
    session1.test_silence_clip_hook(silence_clip_hook, model, item)
    fails(session1.test_silence_clip_hook, lambda clip, silent: (lambda e, hook: silent), model, item,
          match="silenced every clip")
    fails(session1.test_silence_clip_hook, lambda clip, silent: silence_clip_hook(clip % 3 + 1, silent), model, item,
          match="rows from 0")

    def forgets_to_return(clip, silent):
        return lambda e, hook: None

    fails(session1.test_silence_clip_hook, forgets_to_return, model, item, match="did not change at all")


def test_a_slip_in_the_silence_hook_is_named_where_it_happens(model, items):
    """A hook returning one clip's row, raising, or writing into `silent_embeds` fails in 1.3 with a message about
    the hook, not with a traceback from the audio splice (or a wrong table in 1.4)."""
    item = items[0]
    fails(session1.test_silence_clip_hook, lambda clip, silent: (lambda e, hook: silent[clip - 1]), model, item,
          match=r"returned shape \(50, 128\) \(one clip's row.*row 0 replaced")
    fails(session1.test_silence_clip_hook, lambda clip, silent: (lambda e, hook: e[clip - 1, 99]), model, item,
          match=r"hook for clip=1 raised IndexError.*\(3, 50, 128\) = \[clip tok d_model\]")

    def writes_into_silent(clip, silent):
        def hook(embeds, hook):
            keep = [row for row in range(len(embeds)) if row != clip - 1]
            silent[keep] = embeds[keep]
            return silent
        return hook

    fails(session1.test_silence_clip_hook, writes_into_silent, model, item, match="changed `silent_embeds` in place")


@torch.no_grad()
def silence_table(model, item, to_row=lambda k: k, softmax=lambda logits: logits.softmax(-1)):
    """Exercise 1.4 with hooks (the solution's way); `to_row` and `softmax` inject the usual slips."""
    batch = model.to_batch(item["audio_path"], render_prompt(item, "workshop"))
    _, cache = model.run_with_cache(batch.silence_twin(), names_filter=["audio.hook_audio_embeds"])
    ids = session1.option_ids_of(model, [item])
    rows = []
    for k in range(4):
        hooks = [("audio.hook_audio_embeds", silence_clip_hook(to_row(k), cache["audio.hook_audio_embeds"]))]
        run = model.run_with_hooks(batch, fwd_hooks=hooks if k else [])
        rows.append(softmax(option_logits(run, batch.final_position, ids)))
    return torch.cat(rows)


def test_silence_table(model, items):
    item = items[0]
    table = silence_table(model, item)
    session1.test_silence_table(table.numpy(), model, item)
    session1.test_silence_table(list(table), model, item)  # a list of [option] rows, stacked by the checker
    assert torch.allclose(table.sum(1), torch.ones(4))
    fails(session1.test_silence_table, silence_table(model, item, softmax=lambda x: x.softmax(0)), model, item,
          match="every probability is 1.00.*batch axis")
    fails(session1.test_silence_table, silence_table(model, item, softmax=lambda x: x).softmax(0), model, item,
          match="each column sums to 1.*axis 0, what was silenced")
    fails(session1.test_silence_table, silence_table(model, item, softmax=lambda x: x), model, item,
          match="each row should be probabilities")
    fails(session1.test_silence_table, silence_table(model, item, to_row=lambda k: k - 1 if k > 1 else 3), model,
          item, match="wrong order: your row 1 is the run with Audio 3 silenced")
    fails(session1.test_silence_table, table[:, None], model, item, match=r"shape \(4, 1, 4\).*size-1 batch axis")
    fails(session1.test_silence_table, ..., model, item, match="replace the `...  # TODO`")


# ---------------------------------------------------------------- session 2


def audio_mass(pattern, audio_mask, final):
    rows = pattern[torch.arange(len(final)), :, final]
    return (rows * audio_mask[:, None, :]).sum(-1)


def clip_mass(pattern, spans, final):
    rows = pattern[torch.arange(len(final)), :, final]
    return torch.stack([torch.stack([rows[b, :, s:e].sum(-1) for s, e in clips], -1) for b, clips in enumerate(spans)])


def pearson_by_head(mass, correct):
    x = mass - mass.mean(0)
    y = correct.astype(float) - correct.mean()
    return (x * y[:, None, None]).sum(0) / np.sqrt((x**2).sum(0) * (y**2).sum())


def test_audio_mass(model, four):
    session2.test_audio_mass(audio_mass, model, four)
    fails(session2.test_audio_mass, lambda p, m, f: p[torch.arange(len(f)), :, f].sum(-1), model, four,
          match="sums over text positions too")
    fails(session2.test_audio_mass, lambda p, m, f: (p[torch.arange(len(f)), :, :, f] * m[:, None]).sum(-1), model,
          four, match="a column")
    fails(session2.test_audio_mass, lambda p, m, f: (p[:, :, -1] * m[:, None]).sum(-1), model, four,
          match="right-padded batch: you read query position -1")
    fails(session2.test_audio_mass, lambda p, m, f: (p[torch.arange(len(f)), :, f] * m[:, None]).sum(-1) / m.sum(-1,
          keepdim=True), model, four, match="mean instead of sum")
    fails(session2.test_audio_mass, lambda p, m, f: (p[:, :, f] * m[:, None, None]).sum(-1), model, four,
          match=r"expected \(4, 8\) = \[batch head\]. `pattern\[:, :, final\]`")
    fails(session2.test_audio_mass, lambda p, m, f: (p[:, :, f] * m[:, None, :]).sum(-1), model, four,
          match=r"audio_mass raised RuntimeError.*`pattern\[:, :, final\]` pairs")
    fails(session2.test_audio_mass, differs_at_one_place(audio_mass, (2, 5)), model, four, match="prompt 2 head 5")


def test_clip_mass(model, four):
    session2.test_clip_mass(clip_mass, model, four)

    def shifted(ds, de):
        return lambda p, s, f: clip_mass(p, [[(a + ds, b + de) for a, b in c] for c in s], f)

    fails(session2.test_clip_mass, shifted(0, 1), model, four, match="one position too many at the end")
    fails(session2.test_clip_mass, shifted(0, -1), model, four, match="one position too few at the end")
    fails(session2.test_clip_mass, shifted(-1, 0), model, four, match="one position too many at the start")
    fails(session2.test_clip_mass, shifted(1, 0), model, four, match="one position too few at the start")
    fails(session2.test_clip_mass, lambda p, s, f: clip_mass(p, s, f).flip(-1), model, four, match="reverse")

    def mean_per_clip(p, spans, f):
        rows = p[torch.arange(len(f)), :, f]
        return torch.stack([torch.stack([rows[b, :, s:e].mean(-1) for s, e in c], -1) for b, c in enumerate(spans)])

    fails(session2.test_clip_mass, mean_per_clip, model, four, match="mean instead of sum")
    fails(session2.test_clip_mass, lambda p, s, f: clip_mass(p[:, :, f], s, f), model, four,
          match=r"clip_mass raised .*should return shape \(4, 8, 3\)")
    fails(session2.test_clip_mass, differs_at_one_place(clip_mass, (3, 6, 1)), model, four,
          match="prompt 3 head 6 Audio 2")


def within_stratum_r(mass, correct, strata):
    strata = np.asarray(strata)
    x, y = mass.astype(float).copy(), correct.astype(float).copy()
    for s in np.unique(strata):
        x[strata == s] -= x[strata == s].mean(0)
        y[strata == s] -= y[strata == s].mean()
    return pearson_by_head(x, y)


def test_within_stratum_r():
    rng = np.random.default_rng(2)
    strata = list(rng.choice(["a", "b", "c"], 45))
    correct = rng.random(45) < 0.7
    mass = rng.random((45, 2, 3))
    session2.test_within_stratum_r(within_stratum_r, mass, correct, strata)
    fails(session2.test_within_stratum_r, lambda m, c, s: pearson_by_head(m, c), mass, correct, strata,
          match="plain r over all examples")

    def mass_only(m, c, s):
        s = np.asarray(s)
        x = m.copy()
        for g in np.unique(s):
            x[s == g] -= x[s == g].mean(0)
        return pearson_by_head(x, c.astype(float))

    fails(session2.test_within_stratum_r, mass_only, mass, correct, strata, match="but not `correct`")

    def averaged(m, c, s):
        s = np.asarray(s)
        return np.mean([pearson_by_head(m[s == g], c[s == g]) for g in np.unique(s)], 0)

    fails(session2.test_within_stratum_r, averaged, mass, correct, strata, match="averaged the r of each stratum")
    fails(session2.test_within_stratum_r, lambda m, c, s: within_stratum_r(m, c, s)[0], mass, correct, strata,
          match="shape")


def test_pearson_by_head():
    rng = np.random.default_rng(1)
    correct = rng.random(30) < 0.7
    mass = rng.random((30, 3, 4))
    session2.test_pearson_by_head(pearson_by_head, mass, correct)
    fails(session2.test_pearson_by_head, lambda m, c: -pearson_by_head(m, c), mass, correct, match="wrong sign")

    def cosine(m, c):
        return (m * c[:, None, None]).sum(0) / np.sqrt((m**2).sum(0) * c.sum())

    fails(session2.test_pearson_by_head, cosine, mass, correct, match="centred")
    fails(session2.test_pearson_by_head, lambda m, c: pearson_by_head(m, c).T, mass, correct, match="shape")


# ---------------------------------------------------------------- session 3


def final_differences(model, batch, layers):
    """`[batch, layer, d_model]`: the final position's resid_post with audio minus with silence."""
    names = [block_hook_name(layer, "hook_resid_post") for layer in layers]
    rows, final = torch.arange(batch.batch_size), batch.final_position
    finals = []
    for b in (batch, batch.silence_twin()):
        _, cache = model.run_with_cache(b, names_filter=names)
        finals.append(torch.stack([cache[n][rows, final] for n in names], 1))
    return finals[0] - finals[1]


def direction_by_hand(model, batch, layers):
    return final_differences(model, batch, layers).mean(1)


def add_direction_hook(direction, beta):
    def hook(resid, hook):
        resid = resid.clone()
        resid[:, -1] += beta * direction
        return resid

    return hook


def steered_correct(fast, heads, beta):
    return fast.correct(fast.layer_direction(layers_of(heads)), beta)


def percentile_among(ours, draws):
    return 100 * ((draws < ours).sum() + 0.5 * (draws == ours).sum()) / draws.size


def test_direction(model, batch):
    session3.test_direction(direction_by_hand, model, batch)
    fails(session3.test_direction, lambda m, b, ls: -direction_by_hand(m, b, ls), model, batch, match="wrong way")
    fails(session3.test_direction, lambda m, b, ls: direction_by_hand(m, b, [layer - 1 for layer in ls]), model, batch,
          match="hook_resid_pre")


def test_direction_names_the_axis_with_as_many_layers_as_prompts(model, batch):
    """Four prompts and four layers (the session's specialists): averaging over the prompts instead of the layers
    keeps the shape [4, d_model] there, so the checker also tries a layer set of another size and names the axis."""
    layers = [1, 2, 4, 5]
    assert len(layers) == batch.batch_size
    session3.test_direction(direction_by_hand, model, batch, layers=layers)

    def over_prompts(m, b, ls):
        return final_differences(m, b, ls).mean(0)  # the batch axis, by mistake: [layer, d_model]

    fails(session3.test_direction, over_prompts, model, batch, layers,
          match=r"shape \(3, 128\).*dimension 0 has 3, the number of layers, where batch \(4\) belongs: you reduced "
                r"over batch instead of layer")
    # the learner's own layer set alone keeps the shape, so the slip there gets only the generic message
    fails(session3.check_direction, over_prompts, model, batch, layers, match="differs from adaptive_direction")


def test_add_direction_hook(model, batch):
    direction = torch.randn(batch.batch_size, model.cfg.d_model)
    session3.test_add_direction_hook(add_direction_hook, model, batch, direction)

    def everywhere(direction, beta):
        return lambda resid, hook: resid + beta * direction[:, None]

    fails(session3.test_add_direction_hook, everywhere, model, batch, direction, match="every position")
    fails(session3.test_add_direction_hook, lambda d, beta: add_direction_hook(d, 1.0), model, batch, direction,
          match="beta is 2.5")


def test_steered_correct(model, items):
    chosen = [i for i in items if i["split"] == "dev" and i["hint"] == "conflicting"][:12]
    check = session3.test_steered_correct
    check(steered_correct, model, chosen)
    fails(check, lambda f, heads, beta: steered_correct(f, [(h, l) for l, h in heads], beta), model, chosen,
          match="a head is \\(layer, head\\)")
    fails(check, lambda f, heads, beta: f.correct(), model, chosen, match="unsteered")
    fails(check, lambda f, heads, beta: f.correct(f.layer_direction([l for l, _ in heads]), beta), model, chosen,
          match="counted once per head")
    fails(check, lambda f, heads, beta: f.correct(f.layer_direction([max(l for l, _ in heads)]), beta), model,
          chosen, match="deepest layer only")
    fails(check, lambda f, heads, beta: f.correct(f.layer_direction(layers_of(heads)), 1.0), model, chosen,
          match="strength 1.0")


def test_percentile():
    session3.test_percentile(percentile_among)
    fails(session3.test_percentile, lambda ours, d: 100 * (d < ours).mean(), match="below none")
    fails(session3.test_percentile, lambda ours, d: percentile_among(ours, d) / 100, match="fraction")


def test_nothing_in_the_package_imports_the_checkers():
    """The checkers sit at the top of the workshop layer: only notebooks and these tests import them."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[3] / "lens_audio"
    importers = []
    for path in package.rglob("*.py"):
        if "exercises" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                importers += [str(path) for n in names if n.startswith("lens_audio.workshop.exercises")]
    assert not importers, f"modules outside lens_audio/workshop/exercises import the checkers: {importers}"


def session_prose(stem: str) -> str:
    """The markdown of a solution notebook, quote markers and line breaks folded, minus signs as '-'."""
    import re
    from pathlib import Path

    import nbformat

    path = Path(__file__).resolve().parents[3] / "notebooks" / "workshop" / f"{stem}_solution.ipynb"
    text = " ".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    return re.sub(r"\s+", " ", text.replace("\n> ", " ").replace("−", "-"))


@torch.no_grad()
def test_bonus_numbers_in_the_sessions_are_measured(model, items):
    """Numbers the bonuses state without a cell to print them, measured here: session 1's hint-following on the
    Audio-3 conflicting test items and on all of them, session 3's single-layer directions on its four prompts."""
    from lens_audio.analysis import adaptive_direction

    conflicting = [i for i in items if i["split"] == "test" and i["hint"] == "conflicting"]

    def followed(chosen):
        batch = model.to_batch([i["audio_path"] for i in chosen], [render_prompt(i, "workshop") for i in chosen])
        logits = model(batch)[torch.arange(len(chosen)), batch.final_position]
        picks = option_logits(logits[:, None], torch.zeros(len(chosen), dtype=torch.long),
                              session1.option_ids_of(model, chosen)).argmax(-1)
        return sum(i["choices"][j] == i["hinted_choice"] for i, j in zip(chosen, picks.tolist()))

    audio3 = [i for i in conflicting if i["target_clip"] == 3]
    k = followed(audio3)
    m = sum(followed(conflicting[s : s + 40]) for s in range(0, len(conflicting), 40))
    prose = session_prose("01_hooks_and_the_cache")
    assert f"{k} of {len(audio3)} ({100 * k / len(audio3):.1f}%)" in prose
    assert f"{m} of {len(conflicting)}, {100 * m / len(conflicting):.1f}%" in prose

    dev = [i for i in items if i["split"] == "dev" and i["hint"] == "conflicting"]
    four = dev[::15][:4]
    batch = model.to_batch([i["audio_path"] for i in four], [render_prompt(i, "workshop") for i in four])
    last = adaptive_direction(model, batch, [model.cfg.n_layers - 1])
    by_layer = [adaptive_direction(model, batch, [layer]) for layer in range(model.cfg.n_layers)]
    cos = np.array([float(torch.cosine_similarity(d, last, dim=-1).mean()) for d in by_layer])
    ratio = np.array([float((d.norm(dim=-1) / last.norm(dim=-1)).mean()) for d in by_layer])
    prose = session_prose("03_steering")
    assert cos[1] == cos[1:7].min() and cos[6] == cos[1:7].max()
    assert f"cosines from {cos[1]:.2f} (layer 1) to {cos[6]:.2f} (layer 6)" in prose
    assert f"norm ratios from {ratio[1:7].min():.2f} to {ratio[1:7].max():.2f}" in prose
    assert f"norm ratio of {ratio[0]:.2f} at layer 0 (its cosine, {cos[0]:.2f}," in prose


def arrival_layers(audio, silence, patched, threshold):
    share = (patched.mean(1) - silence.mean()) / (audio.mean() - silence.mean())
    below = np.nonzero(share < threshold)[0]
    return list(range(int(below[-1]) + 1 if below.size else 0, len(share)))


def test_arrival_layers():
    """Exercise 3.6: the solution passes; each usual slip fails with its own message."""
    from lens_audio.analysis.final_position import arrival_layer

    session3.test_arrival_layers(arrival_layers)
    for case in session3.ARRIVAL_CASES:  # the solution agrees with the library's arrival layer, a second way
        audio, silence, patched = session3.arrival_case(*case)
        share = (patched.mean(1) - silence.mean()) / (audio.mean() - silence.mean())
        assert arrival_layers(audio, silence, patched, 0.9)[0] == arrival_layer(share, 0.9)
    check = session3.test_arrival_layers

    def each_layer_alone(a, s, p, t):
        share = (p.mean(1) - s.mean()) / (a.mean() - s.mean())
        return [int(layer) for layer in np.nonzero(share >= t)[0]]

    def first_crossing(a, s, p, t):
        share = (p.mean(1) - s.mean()) / (a.mean() - s.mean())
        return list(range(int(np.nonzero(share >= t)[0][0]), len(share)))

    def against_the_audio_run(a, s, p, t):
        below = np.nonzero(p.mean(1) / a.mean() < t)[0]
        return list(range(int(below[-1]) + 1, p.shape[0]))

    fails(check, each_layer_alone, match="restores >= 90% on its own")
    fails(check, first_crossing, match="a later layer does not")
    fails(check, against_the_audio_run, match=r"share restored is of the audio's \*effect\*")
    fails(check, lambda a, s, p, t: arrival_layers(a, s, p.T, t), match=r"averaged over the layers \(axis 0\)")
    fails(check, lambda a, s, p, t: arrival_layers(a, s, p, t)[0], match="returned one layer")
    fails(check, lambda a, s, p, t: ..., match="replace the `...  # TODO`")
