"""promptlab: task-specific image classifiers from a frozen CLIP model by prompt learning."""

__version__ = "0.1.0"
