"""captum attributions of sender, receiver and stitched network (``methods``) and the maps as data with
their figure, without torch (``maps``).
"""
