"""Example third-party side-bench plugin: an extractor."""
