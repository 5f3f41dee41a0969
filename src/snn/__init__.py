"""SNN: the Serverless Neural Network."""

__version__ = "0.1.0"
