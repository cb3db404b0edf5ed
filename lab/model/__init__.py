"""The model: loading (registry, embedded GGUF), named sites, norms as numbers, ZeRO-3 sharded replicas."""
