"""What people look at: the live progress view, per-round tables, comparison tables and plots."""
