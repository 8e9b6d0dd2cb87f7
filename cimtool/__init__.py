"""cimtool: neural networks onto compute-in-memory and spiking hardware."""

__version__ = "0.1.0"
