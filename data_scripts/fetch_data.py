"""Download and prepare every real dataset of the course (`make data`), or the ones named.

Usage: python data_scripts/fetch_data.py [names] [--mirror DIR|URL] [--dest DIR] [--list] (see --help).
"""
import sys
from mmcourse.data.fetch import main
sys.exit(main(sys.argv[1:]))
