"""Download and prepare ESC-50 and its ESC-10 subset (notebooks 03, 10) into MMCOURSE_DATA_DIR.

Options (see --help): --mirror DIR|URL, --dest DIR, --force, --keep-archives, --allow-changed, --list.
"""
import sys
from mmcourse.data.fetch import main
sys.exit(main(["esc50", *sys.argv[1:]]))
