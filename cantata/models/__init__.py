"""Checkpoints and networks: knows files and modules, nothing about requests or HTTP."""
