"""Where networks come from: names and fingerprints (``sources``), loading (``network``),
architectures, checkpoints, the bundled zoo and uploads, and what the dashboard lists (``catalog``).
"""
