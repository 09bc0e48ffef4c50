"""``python -m deepsdf_ad`` is the same CLI as ``deepsdf-ad``."""

import sys

from deepsdf_ad.cli import main

sys.exit(main())
