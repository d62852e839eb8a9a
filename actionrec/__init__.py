"""Video action recognition on UCF-101: shared code for the DVC stages, predict.py and tests."""
