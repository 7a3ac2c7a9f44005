"""Classic change detection and scoring: CVA, SAM, IR-MAD, PCA-k-means, thresholds, scaling, metrics and the
evaluation job; torch-free."""
