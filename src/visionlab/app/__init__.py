"""What every Hydra entry point shares: config composition and checks, bad input in one
line, resuming, run folders and their locks, what a run folder may instantiate, the sweep."""
