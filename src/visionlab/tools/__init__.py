"""Measuring tools, apart from the commands users run: the speed benchmark (benchmark*.py),
the stream benchmark, the augmentation cost, serve's load test and the time-to-accuracy
runner (speedrun). Each is run by its script in scripts/; none imports a command."""
