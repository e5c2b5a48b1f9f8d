"""Training: loss and one-step cells, LR schedule, what the loop logs and saves, the loss curve."""
