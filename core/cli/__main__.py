"""``python -m core.cli``: the ``dad`` command (also how torchrun starts its ranks)."""

import sys

from core.cli.main import main

sys.exit(main())
