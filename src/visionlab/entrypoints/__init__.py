"""Entry points: the only code that knows Hydra's command line. Each module has a `main()`
that `scripts/NAME.py` calls, and a function of the composed config that tests and the
Python API (visionlab.api) call."""
