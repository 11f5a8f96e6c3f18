"""mmcourse: the tested helper package behind the course notebooks.

Every public function names the notebook that explains it. Start with
``solutions/00_welcome.ipynb`` (or ``notebooks/00_welcome.ipynb`` for the student copy).
"""

__version__ = "0.1.0"
