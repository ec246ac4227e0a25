"""Who manages the stack besides root on the host: administrators, tokens, MFA, the audit log."""
