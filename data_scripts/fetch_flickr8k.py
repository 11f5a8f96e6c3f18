"""Download and prepare Flickr8k images + captions (notebooks 04, 08) into MMCOURSE_DATA_DIR.

Options (see --help): --mirror DIR|URL, --dest DIR, --force, --keep-archives, --allow-changed, --list.
"""
import sys
from mmcourse.data.fetch import main
sys.exit(main(["flickr8k", *sys.argv[1:]]))
