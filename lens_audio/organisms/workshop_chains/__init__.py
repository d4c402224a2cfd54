""""workshop-chains": the clip-chain organism (four clips, found by number or by a neighbour's
content), with its acceptance checks. Card: README.md."""
