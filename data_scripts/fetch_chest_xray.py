"""Download and prepare the Kermany pediatric chest X-rays (notebook 09) into MMCOURSE_DATA_DIR.

Options (see --help): --mirror DIR|URL, --dest DIR, --force, --keep-archives, --allow-changed, --list.
"""
import sys
from mmcourse.data.fetch import main
sys.exit(main(["chest_xray", *sys.argv[1:]]))
