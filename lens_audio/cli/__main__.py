"""`python -m lens_audio.cli ...` is `lens-audio ...` (what `torchrun -m lens_audio.cli` runs under several GPUs)."""

import sys

from lens_audio.cli import main

sys.exit(main())
