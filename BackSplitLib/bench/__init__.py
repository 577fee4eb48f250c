"""``backsplit bench``: the paper's experiments on any dataset (quality) and what BackSplit costs (cost).

``quality`` trains and evaluates through the engine (``training.train``, ``inference.Predictor``,
``metrics.evaluate_folder``); ``variants`` derives the datasets the experiments need (partial,
fewer, noisy or automatic auxiliary labels); ``stats`` turns per-seed numbers into mean +- std and paired
differences; ``figures`` draws one PNG per experiment; ``cost`` times inference, training and the data
pipeline.
"""
