"""Tables and figures from run records."""
