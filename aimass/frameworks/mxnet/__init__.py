"""MXNet 1.9 (retired upstream): Gluon blocks and exported symbol/params pairs."""
