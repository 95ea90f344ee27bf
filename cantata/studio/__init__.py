"""Cantata Studio: the web page served at `/`, a client of the Runware protocol like any other."""
