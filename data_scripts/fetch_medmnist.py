"""Download and prepare MedMNIST npz files, default pneumoniamnist + breastmnist (notebook 09) into MMCOURSE_DATA_DIR.

Options (see --help): --mirror DIR|URL, --dest DIR, --force, --keep-archives, --allow-changed, --list.
"""
import sys
from mmcourse.data.fetch import main
sys.exit(main(["medmnist", *sys.argv[1:]]))
