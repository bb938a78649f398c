"""The tuner: trial runner, evaluation statistics and the ``lodotune`` command line."""
