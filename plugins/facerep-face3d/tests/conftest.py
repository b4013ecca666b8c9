from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # _face3d_fixtures
    sys.path.insert(0, str(TESTS))
