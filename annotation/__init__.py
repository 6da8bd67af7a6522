"""Human review rounds in Argilla: push model output, pull responses, merge corrections."""
