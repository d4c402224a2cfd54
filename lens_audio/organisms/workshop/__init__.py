""""workshop": the clip-set model organism (three clips per prompt, a question about one). Card: README.md."""
