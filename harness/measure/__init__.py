"""Measuring cost: a run's memory and rates, and the `bench profile` envelope."""
