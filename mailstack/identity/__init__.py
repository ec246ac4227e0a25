"""Who besides root on the host may manage the stack, how they prove it, what they did."""
