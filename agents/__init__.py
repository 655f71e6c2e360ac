"""daytwo agents."""
