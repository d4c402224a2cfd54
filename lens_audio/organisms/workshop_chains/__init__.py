""""workshop-chains": the clip-chain organism (four clips, found by number or by a neighbour's
content), with its acceptance checks. Card: README.md.

    from lens_audio.organisms.workshop_chains import acceptance_checks, export_latest
"""


def __getattr__(name: str):
    """The acceptance checks and the recipe's export, imported on first use (registering the organisms stays
    cheap)."""
    if name in ("AcceptanceChecks", "AcceptanceRules", "acceptance_checks"):
        from lens_audio.organisms.workshop_chains import acceptance

        return getattr(acceptance, name)
    if name in ("ChainsTrainSettings", "export_latest", "train_chains"):
        from lens_audio.organisms.workshop_chains import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module 'lens_audio.organisms.workshop_chains' has no attribute {name!r}")


__all__ = ["AcceptanceChecks", "AcceptanceRules", "ChainsTrainSettings", "acceptance_checks", "export_latest",
           "train_chains"]
