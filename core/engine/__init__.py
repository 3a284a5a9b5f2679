"""Stitching: cutting networks at layers (``layers``), stitch layers (``stitches``), least squares
(``lstsq``), the fused training and scoring pass (``fused``, ``conv_fusion``, ``folding``), whole
grids (``grid``, ``results``) and rebuilding a stored stitch (``stitched``).
"""
