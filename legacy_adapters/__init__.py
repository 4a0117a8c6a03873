"""Read-only adapters over legacy stores. They report data and changes; they never write."""
