"""The HTML report a physician reads, and the truth check of simulated studies."""
