"""`python -m slm_train` runs the `slm-train` CLI."""
import sys

from slm_train.cli import main

sys.exit(main())
