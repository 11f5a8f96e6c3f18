"""``python -m mmcourse ...``: see :mod:`mmcourse.cli`."""
import sys

from mmcourse.cli import main

sys.exit(main())
