"""The live demo page: rate control in a browser, served by Voila (``hvq demo --web``).

``demo.ipynb`` (shipped as package data, so an installed kit finds it too) is a two-cell notebook
that Voila runs and shows without its code; it calls :func:`hvq.webdemo.app.build_app`, where the
widgets and the computation live.
"""

from pathlib import Path

#: The notebook that ``hvq demo --web`` hands to Voila.
NOTEBOOK = Path(__file__).with_name("demo.ipynb")
