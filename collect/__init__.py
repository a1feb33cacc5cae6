"""Preference collection: generate candidates, collect human comparisons in a browser, export training files."""
