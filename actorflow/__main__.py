"""``python -m actorflow``."""

import sys

from actorflow.cli import main

sys.exit(main())
