"""Reproduction of the 2019 self-supervision challenge winner: ODC, CODC, and the four evaluation tracks."""
