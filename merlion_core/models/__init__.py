"""Neural network building blocks (torch): MLPs, the action encoder, the model heads."""
