"""The offline toy world: rendered shapes in four styles, and the tiny CLIP and DINO pretrained on it."""
