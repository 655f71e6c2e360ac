"""daytwo pipeline core."""
