"""Data: synthetic label and image generators, and readers for real datasets."""
