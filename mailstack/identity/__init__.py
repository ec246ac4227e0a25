"""Who may manage the stack and how they prove it: administrators, second factors, tokens."""
