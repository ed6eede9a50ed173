"""Engines: training, prediction and the run-all orchestration. They take plain arguments, never argparse."""
