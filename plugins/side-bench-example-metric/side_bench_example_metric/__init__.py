"""Example third-party side-bench plugin."""
