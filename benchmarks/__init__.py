"""Benchmarks of the Lectr gateway, and the mock provider tests share with them."""
