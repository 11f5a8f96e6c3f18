"""Download and prepare the Free Spoken Digit Dataset (notebooks 03, 05, 10) into MMCOURSE_DATA_DIR.

Options (see --help): --mirror DIR|URL, --dest DIR, --force, --keep-archives, --allow-changed, --list.
"""
import sys
from mmcourse.data.fetch import main
sys.exit(main(["fsdd", *sys.argv[1:]]))
