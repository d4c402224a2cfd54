"""Sparse autoencoders on `HookedAudioLM` activations, in SAELens's file format, with dashboards you can hear.

- `sae.py`: `SparseAutoencoder` (TopK or JumpReLU; SAELens's weights, config and hook names), `save` / `load`.
- `activations.py`: `collect_activations` at one hook point and a position scope (audio tokens, text tokens, the
  final prompt position, or all), over a benchmark (`load_mmau`) or a folder of audio (`items_from_folder`).
- `train.py`: `train_sae`, a small resumable TopK trainer, and `evaluate_sae` (variance explained, L0).
- `splice.py`: `splice(model, sae, use_error_term=...)`, the SAE inside the model, latents under
  `{hook}.hook_sae_acts_post`.
- `dashboard.py`: `feature_dashboard` (a feature's top audio tokens with playable snippets, spectrograms,
  histogram, logits, top prompt tokens) for Jupyter and as one offline HTML page.
- `features.py`: each feature's class precision on a labelled benchmark.
- `steering.py`: the adaptive audio-minus-silence direction decomposed into SAE features.
- `recipe.py`: SAEs over a benchmark's splits in one call (`lens-audio sae train` / `sae workshop`).
"""

from lens_audio.sae.activations import ActivationSet, collect_activations, items_from_folder, unique_by_audio
from lens_audio.sae.dashboard import FeatureDashboard, feature_dashboard
from lens_audio.sae.features import classes_with_a_feature, feature_classes
from lens_audio.sae.sae import SAEConfig, SparseAutoencoder
from lens_audio.sae.splice import splice
from lens_audio.sae.steering import DirectionDecomposition, decompose_direction, named_option, naming_rate
from lens_audio.sae.train import SAEMetrics, SAETrainSettings, evaluate_sae, train_sae

__all__ = [
    "ActivationSet",
    "DirectionDecomposition",
    "FeatureDashboard",
    "classes_with_a_feature",
    "decompose_direction",
    "feature_classes",
    "feature_dashboard",
    "named_option",
    "naming_rate",
    "SAEConfig",
    "SAEMetrics",
    "SAETrainSettings",
    "SparseAutoencoder",
    "collect_activations",
    "evaluate_sae",
    "items_from_folder",
    "splice",
    "train_sae",
    "unique_by_audio",
]
