"""The standard datasets from their hosts: where each comes from (:mod:`.remote`), verified downloads
and their placement (:mod:`.fetch`), safe extraction (:mod:`.archives`) and ImageNet's class names
(:mod:`.imagenet_classes`).
"""
