"""Compare runs: `python scripts/report.py outputs/multirun/DATE/TIME` writes report.md, report.csv, curves.png."""

from visionlab.entrypoints.report import main

if __name__ == "__main__":
    main()
