"""Benchmark visionlab against plain PyTorch: `python scripts/benchmark.py --help`."""

from visionlab.tools.benchmark import main

if __name__ == "__main__":
    main()
