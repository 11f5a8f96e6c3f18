"""Download and prepare ESC-10 (made from the ESC-50 archive, so this fetches ESC-50 too; notebooks 03, 10).

Options (see --help): --mirror DIR|URL, --dest DIR, --force, --keep-archives, --allow-changed, --list.
"""
import sys
from mmcourse.data.fetch import main
sys.exit(main(["esc10", *sys.argv[1:]]))
