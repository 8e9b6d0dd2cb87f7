"""Model registry, front-ends and model (de)serialisation."""
