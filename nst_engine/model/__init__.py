"""The model and its weights: VGG19's layers as data (``layers``, torch-free), weight files
(``weights``: known downloads, layouts, validation, the compact cache), the feature extractor
(``vgg``) and the loaded models kept between jobs (``cache``).

Importing this package imports nothing: ``params`` and the presets need ``layers`` without
paying for torch.
"""
