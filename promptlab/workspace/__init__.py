"""The app's projects on disk: images and classes, training runs and their results, labelling."""
