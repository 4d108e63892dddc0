"""Adapters at the edge that let other feature stores' clients talk to potluck's services.

Each adapter maps another system's wire messages to potluck's definitions and requests and back;
Core, Serving and the engines keep speaking potluck's own types. Only the composition roots
(``potluck.cli``) import this package (an import-linter contract says so).
"""
