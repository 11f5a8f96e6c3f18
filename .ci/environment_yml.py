"""Print environment.yml (conda) with exactly the pins of requirements.lock (`make lock`)."""
from pathlib import Path

pins = [line.split("#")[0].strip() for line in Path("requirements.lock").read_text().splitlines()]
pins = [p for p in pins if p and not p.startswith("-")]
print("# Generated from requirements.lock by `make lock`; a test checks they agree.")
print("# conda env create -f environment.yml && conda activate mmcourse && pip install --no-deps -e .")
print("name: mmcourse\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n  - pip:")
for p in pins:
    print(f"      - {p}")
