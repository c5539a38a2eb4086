"""What every layer may use: errors, configuration, logging, redaction, JSON limits."""
