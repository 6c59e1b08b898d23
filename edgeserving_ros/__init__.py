"""Deadline-aware serving of early-exit DNN perception models on one shared GPU in ROS 2."""

__version__ = '0.1.0'
