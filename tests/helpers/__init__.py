"""Helpers shared by test modules, imported as a package (``from helpers.crashing import ...``)."""
