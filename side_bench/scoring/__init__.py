"""Scoring candidates against the training set: features and exact k-NN (knn), the training-set
reference and per-candidate scores (scores), intervals and tests (stats), the memorization
divergence of a model (divergence), images made elsewhere (images), and scoring again from
stored records (rescore).
"""
