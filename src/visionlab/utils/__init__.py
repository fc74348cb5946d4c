"""Small helpers every layer may use: atomic writes, seeds, errors, memory limits, figures."""
