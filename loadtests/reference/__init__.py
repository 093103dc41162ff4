"""The reference for the reserve benchmark: the least a server must do to answer a reserve."""
