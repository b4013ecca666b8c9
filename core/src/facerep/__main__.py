"""``python -m facerep`` is the ``facerep`` command."""

import sys

from facerep.cli import main

sys.exit(main())
