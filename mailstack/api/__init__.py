"""The REST API of the admin service (issue 16): its operations, free of any web framework."""
