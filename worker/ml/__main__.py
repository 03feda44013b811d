"""`python -m worker.ml <command>`; see worker/ml/cli.py."""

import sys

from worker.ml.cli import main

sys.exit(main())
