"""Stream path against memory path on a folder of JPEGs: `python scripts/stream_benchmark.py --help`."""

from visionlab.tools.stream_benchmark import main

if __name__ == "__main__":
    main()
