"""Tools over the commands: the time-to-accuracy runner (speedrun)."""
