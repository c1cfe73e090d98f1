"""Scheduling: the C deadline queue, the arbiter, its strategies and the executors."""
