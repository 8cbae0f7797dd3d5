"""Files in and out: atomic writes, checkpoints of every kind, PyTorch files, downloads, safe unpickling.

Kept apart from the teaching core (layers, model, train, analysis): nothing here is needed to read the paper.
"""
