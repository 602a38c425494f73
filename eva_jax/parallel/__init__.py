"""Scale-out: device meshes, logical-axis sharding rules, expert-parallel dispatch, multi-host start-up."""
