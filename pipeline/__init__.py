"""daytwo pipeline."""
