"""The site daemon: what a hospital runs next to its data."""
