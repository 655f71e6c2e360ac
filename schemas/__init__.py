"""daytwo schemas."""
