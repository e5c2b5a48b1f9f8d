"""The demo and test data: the synthetic toy COCO set, small synthetic batches, prediction pictures."""
