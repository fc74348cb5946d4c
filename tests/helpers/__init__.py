"""Scripts and classes the tests run in subprocesses (not tests themselves)."""
