"""What an experiment edits and reads: intervention operators at named sites, the one injection, concept vectors, readouts."""
