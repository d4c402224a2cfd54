""""workshop-v1": the first workshop model (one clip per prompt). Card: README.md."""
