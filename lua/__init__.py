"""Package data: the Redis Lua scripts, installed as `app.lua` (see setup.py)."""
