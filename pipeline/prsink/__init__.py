"""daytwo pipeline prsink."""
