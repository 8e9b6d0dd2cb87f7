"""One module per stage: read inputs, call domain code, write the artifact."""
