"""Human-readable outputs: the selection report (HTML) and the method x benchmark comparison."""
