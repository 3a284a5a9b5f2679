"""Representational similarity: CKA estimators (``cka``), their kernels (``kernels``) and CKA between
networks' layers (``networks``).
"""
