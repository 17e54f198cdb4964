"""Task machinery: the Task model, declarative TOML tasks, data sources, FASTA, metrics."""
